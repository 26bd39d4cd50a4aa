//! Rendering diagnostics to text: the one place where [`Diagnostic`] data
//! becomes what users read. Pure functions from data to strings; the CLI
//! decides where the text goes.

use codespan_reporting::diagnostic as cs;
use codespan_reporting::files::SimpleFiles;
use codespan_reporting::term::{self, termcolor};

use crate::diag::{Diagnostic, Files, Severity};

/// rustc-style text: `error[P0002]: ...`, file:line:col, the span
/// underlined, secondary labels, `= help:` lines.
pub fn human(files: &Files, diagnostics: &[Diagnostic], color: bool) -> String {
    let mut simple = SimpleFiles::new();
    for (_, f) in files.iter() {
        simple.add(f.name.clone(), f.text.clone());
    }
    let mut buffer = if color {
        termcolor::Buffer::ansi()
    } else {
        termcolor::Buffer::no_color()
    };
    let config = term::Config::default();
    for d in diagnostics {
        let _ = term::emit(&mut buffer, &config, &simple, &to_codespan(d));
    }
    String::from_utf8_lossy(buffer.as_slice()).into_owned()
}

fn to_codespan(d: &Diagnostic) -> cs::Diagnostic<usize> {
    let severity = match d.severity {
        Severity::Error => cs::Severity::Error,
        Severity::Warning => cs::Severity::Warning,
    };
    let mut labels = vec![
        cs::Label::primary(d.primary.file.0, d.primary.span.range())
            .with_message(d.primary.message.clone()),
    ];
    labels.extend(d.secondary.iter().map(|l| {
        cs::Label::secondary(l.file.0, l.span.range()).with_message(l.message.clone())
    }));
    let mut notes: Vec<String> = d.notes.clone();
    if let Some(help) = &d.help {
        notes.push(format!("help: {help}"));
    }
    cs::Diagnostic::new(severity)
        .with_code(d.code.info().code)
        .with_message(d.message.clone())
        .with_labels(labels)
        .with_notes(notes)
}
