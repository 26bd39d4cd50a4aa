" Vim/Neovim syntax for Patronus firewall policies (.pf). The keywords are
" every word of grammar/src/lexer.rs (a test in cli/tests/editors.rs
" checks it); scopes follow editors/textmate/patronus.tmLanguage.json.
if exists('b:current_syntax')
  finish
endif

" Names may contain `-` (`tcp-syn`): `tcp` alone is a keyword, `tcp-syn` not.
syn iskeyword @,48-57,_,-

syn keyword patronusStatement interface const table file options test expect out
syn keyword patronusAction    allow deny limit
syn keyword patronusVerdict   pass drop
syn keyword patronusKeyword   from to port any proto type code flags vlan rate burst per label log repeat
syn keyword patronusProtocol  tcp udp icmp icmpv6 ip4 ip6

syn match   patronusConst     /\$[A-Za-z_][A-Za-z0-9_-]*/
syn match   patronusTable     /@[A-Za-z_][A-Za-z0-9_-]*/
syn match   patronusNumber    /\<[0-9]\+\>/
syn match   patronusDuration  /\<[0-9]\+\(ms\|s\|m\|h\|d\)\>/
syn match   patronusAddress   /\<[0-9]\+\.[0-9]\+\.[0-9]\+\.[0-9]\+\(\/[0-9]\+\)\?/
syn match   patronusAddress   /\(\<[0-9A-Fa-f]\+:\|::\)[0-9A-Fa-f:.]*\(\/[0-9]\+\)\?/
syn match   patronusOperator  /->\|!\|=/
syn region  patronusString    start=/"/ skip=/\\./ end=/"\|$/ contains=patronusEscape
syn match   patronusEscape    /\\./ contained
syn match   patronusComment   /#.*$/ contains=@Spell

hi def link patronusStatement Statement
hi def link patronusAction    Keyword
hi def link patronusVerdict   Boolean
hi def link patronusKeyword   Keyword
hi def link patronusProtocol  Type
hi def link patronusConst     Constant
hi def link patronusTable     Identifier
hi def link patronusNumber    Number
hi def link patronusDuration  Number
hi def link patronusAddress   Number
hi def link patronusOperator  Operator
hi def link patronusString    String
hi def link patronusEscape    SpecialChar
hi def link patronusComment   Comment

let b:current_syntax = 'patronus'
