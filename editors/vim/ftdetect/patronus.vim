" Patronus firewall policies: *.pf files.
autocmd BufRead,BufNewFile *.pf setfiletype patronus
