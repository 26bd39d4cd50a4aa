//! `patronusc lsp`: a Language Server Protocol server over stdin/stdout
//! (lsp-server's JSON-RPC transport: threads, no async runtime). It keeps
//! the text of each open document and answers every request from a fresh
//! [`analysis::Analysis`] of it: diagnostics as `check` reports them,
//! hover, definition, references, rename, completion, formatting, the
//! lints' quick fixes, and an `explain` code lens on test lines ([`features`]).
//! Nothing is written to stdout but protocol messages.

pub mod analysis;
pub mod features;
pub mod text;

use std::collections::HashMap;

use clap::Args;
use lsp_server::{Connection, ErrorCode, Message, Notification, Request, Response};
use lsp_types::notification::{
    DidChangeTextDocument, DidCloseTextDocument, DidOpenTextDocument, Notification as _,
    PublishDiagnostics, ShowMessage,
};
use lsp_types::request::{
    CodeActionRequest, CodeLensRequest, Completion, ExecuteCommand, Formatting, GotoDefinition,
    HoverRequest, References, Rename, Request as _,
};
use lsp_types::{
    CodeActionKind, CodeActionOptions, CodeActionProviderCapability, CodeLensOptions,
    CompletionOptions, ExecuteCommandOptions, HoverProviderCapability, MessageType, OneOf,
    PublishDiagnosticsParams, ServerCapabilities, ServerInfo, ShowMessageParams,
    TextDocumentSyncCapability, TextDocumentSyncKind, Uri,
};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::common::{CliError, Status};
use analysis::Analysis;

#[derive(Debug, Args)]
pub struct LspArgs {
    /// Speak the protocol over stdin/stdout (the only transport, and the
    /// default; accepted because editors' client libraries pass it).
    #[arg(long)]
    pub stdio: bool,
}

pub fn run(_args: &LspArgs) -> Result<Status, CliError> {
    let (connection, io_threads) = Connection::stdio();
    let status = serve(&connection)?;
    // Dropping the connection closes the writer thread's channel.
    drop(connection);
    io_threads
        .join()
        .map_err(|e| CliError::new(format!("lsp: {e}")))?;
    Ok(status)
}

/// What the server offers, as `initialize` answers it.
pub fn capabilities() -> ServerCapabilities {
    ServerCapabilities {
        text_document_sync: Some(TextDocumentSyncCapability::Kind(TextDocumentSyncKind::FULL)),
        hover_provider: Some(HoverProviderCapability::Simple(true)),
        definition_provider: Some(OneOf::Left(true)),
        references_provider: Some(OneOf::Left(true)),
        rename_provider: Some(OneOf::Left(true)),
        document_formatting_provider: Some(OneOf::Left(true)),
        completion_provider: Some(CompletionOptions {
            trigger_characters: Some(vec!["$".to_string(), "@".to_string()]),
            ..Default::default()
        }),
        code_action_provider: Some(CodeActionProviderCapability::Options(CodeActionOptions {
            code_action_kinds: Some(vec![CodeActionKind::QUICKFIX]),
            ..Default::default()
        })),
        code_lens_provider: Some(CodeLensOptions {
            resolve_provider: Some(false),
        }),
        execute_command_provider: Some(ExecuteCommandOptions {
            commands: vec![features::EXPLAIN_COMMAND.to_string()],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn serve(connection: &Connection) -> Result<Status, CliError> {
    let init = serde_json::json!({
        "capabilities": capabilities(),
        "serverInfo": ServerInfo {
            name: "patronusc".to_string(),
            version: Some(env!("CARGO_PKG_VERSION").to_string()),
        },
    });
    let protocol = |e: lsp_server::ProtocolError| CliError::new(format!("lsp: {e}"));
    let (id, _params) = connection.initialize_start().map_err(protocol)?;
    connection.initialize_finish(id, init).map_err(protocol)?;
    let mut server = Server {
        connection,
        documents: HashMap::new(),
    };
    for message in &connection.receiver {
        match message {
            Message::Request(request) => {
                if connection.handle_shutdown(&request).map_err(protocol)? {
                    return Ok(Status::Success);
                }
                server.request(request);
            }
            Message::Notification(notification) => {
                if notification.method == "exit" {
                    // `exit` without `shutdown` first: exit 1, as the
                    // protocol asks.
                    return Ok(Status::Failure);
                }
                server.notification(notification);
            }
            Message::Response(_) => {}
        }
    }
    // The client went away without `shutdown`.
    Ok(Status::Failure)
}

struct Server<'c> {
    connection: &'c Connection,
    /// Open documents by URI: their text, as last sent in full.
    documents: HashMap<String, String>,
}

impl Server<'_> {
    fn send(&self, message: Message) {
        // A closed channel means the client is gone; the loop ends then.
        let _ = self.connection.sender.send(message);
    }

    fn notify(&self, method: &str, params: impl serde::Serialize) {
        self.send(Message::Notification(Notification::new(
            method.to_string(),
            params,
        )));
    }

    fn analysis(&self, uri: &Uri) -> Option<Analysis> {
        let text = self.documents.get(uri.as_str())?;
        let name = text::uri_to_path(uri)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| uri.as_str().to_string());
        Some(Analysis::new(&name, text))
    }

    fn publish(&self, uri: &Uri) {
        let Some(a) = self.analysis(uri) else {
            return;
        };
        for (file_uri, diagnostics) in features::diagnostics(uri, &a) {
            self.notify(
                PublishDiagnostics::METHOD,
                PublishDiagnosticsParams::new(file_uri, diagnostics, None),
            );
        }
    }

    fn notification(&mut self, n: Notification) {
        match n.method.as_str() {
            DidOpenTextDocument::METHOD => {
                if let Some(p) = params::<lsp_types::DidOpenTextDocumentParams>(n.params) {
                    let uri = p.text_document.uri;
                    self.documents
                        .insert(uri.as_str().to_string(), p.text_document.text);
                    self.publish(&uri);
                }
            }
            DidChangeTextDocument::METHOD => {
                if let Some(p) = params::<lsp_types::DidChangeTextDocumentParams>(n.params) {
                    let uri = p.text_document.uri;
                    // Full sync: the last change holds the whole text.
                    if let Some(change) = p.content_changes.into_iter().last() {
                        self.documents.insert(uri.as_str().to_string(), change.text);
                        self.publish(&uri);
                    }
                }
            }
            DidCloseTextDocument::METHOD => {
                if let Some(p) = params::<lsp_types::DidCloseTextDocumentParams>(n.params) {
                    let uri = p.text_document.uri;
                    self.documents.remove(uri.as_str());
                    self.notify(
                        PublishDiagnostics::METHOD,
                        PublishDiagnosticsParams::new(uri, Vec::new(), None),
                    );
                }
            }
            _ => {}
        }
    }

    fn request(&mut self, r: Request) {
        let id = r.id.clone();
        let result = self.answer(r);
        let response = match result {
            Ok(value) => Response {
                id,
                response_result: Ok(value),
            },
            Err((code, message)) => Response::new_err(id, code as i32, message),
        };
        self.send(Message::Response(response));
    }

    fn answer(&mut self, r: Request) -> Result<Value, (ErrorCode, String)> {
        let Request { method, params, .. } = r;
        match method.as_str() {
            HoverRequest::METHOD => {
                let p: lsp_types::HoverParams = parse(params)?;
                let pos = p.text_document_position_params;
                let a = self.document(&pos.text_document.uri)?;
                Ok(json(&features::hover(
                    &a,
                    features::offset(&a, pos.position),
                )))
            }
            GotoDefinition::METHOD => {
                let p: lsp_types::GotoDefinitionParams = parse(params)?;
                let pos = p.text_document_position_params;
                let uri = pos.text_document.uri;
                let a = self.document(&uri)?;
                let offset = features::offset(&a, pos.position);
                Ok(json(&features::definition(&uri, &a, offset)))
            }
            References::METHOD => {
                let p: lsp_types::ReferenceParams = parse(params)?;
                let pos = p.text_document_position;
                let uri = pos.text_document.uri;
                let a = self.document(&uri)?;
                let offset = features::offset(&a, pos.position);
                Ok(json(&features::references(
                    &uri,
                    &a,
                    offset,
                    p.context.include_declaration,
                )))
            }
            Rename::METHOD => {
                let p: lsp_types::RenameParams = parse(params)?;
                let pos = p.text_document_position;
                let uri = pos.text_document.uri;
                let a = self.document(&uri)?;
                let offset = features::offset(&a, pos.position);
                match features::rename(&uri, &a, offset, &p.new_name) {
                    Ok(edit) => Ok(json(&edit)),
                    Err(message) => Err((ErrorCode::InvalidParams, message)),
                }
            }
            Completion::METHOD => {
                let p: lsp_types::CompletionParams = parse(params)?;
                let pos = p.text_document_position;
                let a = self.document(&pos.text_document.uri)?;
                let offset = features::offset(&a, pos.position);
                Ok(json(&features::completion(&a, offset)))
            }
            Formatting::METHOD => {
                let p: lsp_types::DocumentFormattingParams = parse(params)?;
                let a = self.document(&p.text_document.uri)?;
                match features::formatting(&a) {
                    Ok(edits) => Ok(json(&edits)),
                    Err(message) => Err((ErrorCode::RequestFailed, message)),
                }
            }
            CodeActionRequest::METHOD => {
                let p: lsp_types::CodeActionParams = parse(params)?;
                let uri = p.text_document.uri;
                let a = self.document(&uri)?;
                Ok(json(&features::code_actions(&uri, &a, p.range)))
            }
            CodeLensRequest::METHOD => {
                let p: lsp_types::CodeLensParams = parse(params)?;
                let uri = p.text_document.uri;
                let a = self.document(&uri)?;
                Ok(json(&features::code_lenses(&uri, &a)))
            }
            ExecuteCommand::METHOD => {
                let p: lsp_types::ExecuteCommandParams = parse(params)?;
                if p.command != features::EXPLAIN_COMMAND {
                    return Err((
                        ErrorCode::InvalidParams,
                        format!("unknown command `{}`", p.command),
                    ));
                }
                let (uri, line) = match p.arguments.as_slice() {
                    [Value::String(uri), line] => (
                        uri.parse::<Uri>().map_err(|e| {
                            (ErrorCode::InvalidParams, format!("bad URI `{uri}`: {e}"))
                        })?,
                        line.as_u64().ok_or((
                            ErrorCode::InvalidParams,
                            "the second argument is a line number".to_string(),
                        ))?,
                    ),
                    _ => {
                        return Err((
                            ErrorCode::InvalidParams,
                            format!("{} takes a document URI and a line", p.command),
                        ));
                    }
                };
                let a = self.document(&uri)?;
                let line = usize::try_from(line).unwrap_or(usize::MAX);
                let Some((_, report)) = features::explain_at(&a, line) else {
                    return Err((
                        ErrorCode::InvalidParams,
                        format!("no test step on line {}", line.saturating_add(1)),
                    ));
                };
                self.notify(
                    ShowMessage::METHOD,
                    ShowMessageParams {
                        typ: MessageType::INFO,
                        message: report.clone(),
                    },
                );
                Ok(Value::String(report))
            }
            _ => Err((
                ErrorCode::MethodNotFound,
                format!("`{method}` is not supported"),
            )),
        }
    }

    fn document(&self, uri: &Uri) -> Result<Analysis, (ErrorCode, String)> {
        self.analysis(uri).ok_or_else(|| {
            (
                ErrorCode::InvalidParams,
                format!("`{}` is not open", uri.as_str()),
            )
        })
    }
}

fn parse<T: DeserializeOwned>(params: Value) -> Result<T, (ErrorCode, String)> {
    serde_json::from_value(params).map_err(|e| (ErrorCode::InvalidParams, e.to_string()))
}

fn params<T: DeserializeOwned>(params: Value) -> Option<T> {
    serde_json::from_value(params).ok()
}

/// A result as JSON (the protocol's types always serialise).
fn json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}
