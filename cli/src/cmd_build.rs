//! `patronusc build`: checks a policy, lowers it and compiles it.
//!
//! - `build POLICY -o policy.o` writes the loadable object (ELF: the XDP
//!   program, the tc egress program when conntrack is on, BTF-defined maps)
//!   and, beside it, `policy.maps`: the maps' initial contents in the text
//!   format of `patronus_codegen::abi::encode_images` (one `map` header per
//!   map, then one `KEYHEX VALUEHEX` line per entry). A loader fills the
//!   maps from it after creating them; the object alone starts empty.
//! - `--emit asm` prints the annotated disassembly of the program(s).
//! - `--emit ir` / `--emit maps` print the lowered IR or the map plan with
//!   every entry, as the deterministic text of `patronus_compiler::ir::text`.

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use patronus_compiler::diag::Files;
use patronus_compiler::ir;

use crate::common::{
    CliError, ColorArgs, Status, TableAccessArgs, print_human_diagnostics, read_policy,
    report_codegen_error, write_stdout,
};

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The policy file.
    #[arg(value_name = "POLICY")]
    pub policy: PathBuf,
    /// Print a text form instead of writing the object.
    #[arg(long, value_enum)]
    pub emit: Option<Emit>,
    /// The object to write (with `--emit`: write the text here instead of
    /// stdout). The map contents go beside it, extension `.maps`.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub color: ColorArgs,
    #[command(flatten)]
    pub tables: TableAccessArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Emit {
    /// The lowered intermediate representation.
    Ir,
    /// The BPF maps the program needs and their initial contents.
    Maps,
    /// The generated eBPF program, disassembled and annotated.
    Asm,
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    std::fs::write(path, bytes)
        .map_err(|err| CliError::new(format!("cannot write `{}`: {err}", path.display())))
}

/// The map-contents file written beside the object `path`.
pub fn maps_path(object: &Path) -> PathBuf {
    object.with_extension("maps")
}

pub fn run(args: &BuildArgs) -> Result<Status, CliError> {
    if args.emit.is_none() && args.output.is_none() {
        return Err(CliError::new(
            "nothing to do: give `-o FILE` to write the object, or `--emit ir|maps|asm`",
        ));
    }
    let loader = args.tables.loader()?;
    let mut files = Files::new();
    let file = read_policy(&mut files, &args.policy)?;
    let checked = patronus_compiler::check(&mut files, file, &loader);
    // Warnings are shown but do not stop the build; errors do.
    print_human_diagnostics(&files, &checked.diagnostics, args.color.color);
    let policy = match checked.policy {
        Some(policy) if !checked.has_errors() => policy,
        _ => return Ok(Status::Failure),
    };
    let program = ir::lower(&policy);
    // A kernel limit is the policy's fault (exit 1, as `check`'s P0016);
    // anything else is the compiler's (exit 2).
    let compile = || match patronus_codegen::compile(&program) {
        Ok(object) => Ok(Some(object)),
        Err(err) => {
            let name = args.policy.display().to_string();
            report_codegen_error(&files, &policy, &name, &err, args.color.color).map(|()| None)
        }
    };
    let text = match args.emit {
        Some(Emit::Ir) => ir::text::ir(&program),
        Some(Emit::Maps) => ir::text::maps(&program),
        Some(Emit::Asm) => match compile()? {
            Some(object) => object.listing,
            None => return Ok(Status::Failure),
        },
        None => {
            let Some(object) = compile()? else {
                return Ok(Status::Failure);
            };
            // `output` is set: checked above.
            let path = args.output.as_deref().unwrap_or(Path::new("policy.o"));
            write_file(path, &object.elf)?;
            let images = patronus_codegen::abi::encode_images(&object.maps);
            write_file(&maps_path(path), images.as_bytes())?;
            return Ok(Status::Success);
        }
    };
    match &args.output {
        None => write_stdout(&text)?,
        Some(path) => write_file(path, text.as_bytes())?,
    }
    Ok(Status::Success)
}
