//! End-to-end tests of `patronusc lsp`: real JSON-RPC sessions with the
//! built binary over its stdin/stdout — initialize, didOpen, didChange,
//! hover, definition, references, completion, formatting, codeAction,
//! codeLens, executeCommand, shutdown and exit — with the responses as
//! insta snapshots, and the diagnostics compared with `patronusc check`.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::Duration;

use serde_json::{Value, json};

mod common;

use common::{TempDir, patronusc};

const POLICY: &str = r#"# a small web server
const web   = { 80, 443 }
const ops   = 198.51.100.7
const admin = { 192.0.2.0/24, $ops }
table blocklist { 203.0.113.0/24, 198.51.100.128/25 }

options {
  default = deny
}

deny  from @blocklist label "blocklist"
allow tcp to port $web label "web"
allow tcp from $admin to port 22 label "ssh"
allow tcp from 203.0.113.5 to port 22
allow udp from 10.1.2.3/8 to port 53

test "web" {
  expect pass tcp 192.0.2.10:40000 -> 192.0.2.1:443
  expect drop tcp 203.0.113.9:40000 -> 192.0.2.1:80
}
"#;

/// One server process and the messages it has sent.
struct Client {
    child: Child,
    stdin: Option<ChildStdin>,
    messages: Receiver<Value>,
    next_id: i64,
    /// Notifications received while waiting for responses.
    notifications: Vec<Value>,
    /// The temporary directory's `file:` URI prefix, replaced in snapshots.
    dir_uri: String,
}

impl Client {
    fn start(dir: &TempDir) -> Client {
        let mut child = Command::new(env!("CARGO_BIN_EXE_patronusc"))
            .arg("lsp")
            .current_dir(&dir.0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start patronusc lsp");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            loop {
                let mut length = None;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let line = line.trim_end();
                    if line.is_empty() {
                        break;
                    }
                    if let Some(n) = line.strip_prefix("Content-Length: ") {
                        length = n.parse::<usize>().ok();
                    }
                }
                let mut body = vec![0; length.expect("a Content-Length header")];
                if reader.read_exact(&mut body).is_err() {
                    return;
                }
                let message: Value = serde_json::from_slice(&body).expect("a JSON message");
                if tx.send(message).is_err() {
                    return;
                }
            }
        });
        Client {
            stdin: child.stdin.take(),
            child,
            messages: rx,
            next_id: 1,
            notifications: Vec::new(),
            dir_uri: format!("file://{}", dir.0.display()),
        }
    }

    fn send(&mut self, message: Value) {
        let body = message.to_string();
        let stdin = self.stdin.as_mut().expect("stdin open");
        write!(stdin, "Content-Length: {}\r\n\r\n{body}", body.len()).expect("write");
        stdin.flush().expect("flush");
    }

    fn next(&mut self) -> Value {
        match self.messages.recv_timeout(Duration::from_secs(60)) {
            Ok(message) => message,
            Err(RecvTimeoutError::Timeout) => panic!("no message from the server in 60 s"),
            Err(RecvTimeoutError::Disconnected) => panic!("the server closed its stdout"),
        }
    }

    /// Sends a request and returns its whole response.
    fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        loop {
            let message = self.next();
            if message.get("id") == Some(&json!(id)) && message.get("method").is_none() {
                return message;
            }
            self.notifications.push(message);
        }
    }

    /// The result of a request that must succeed.
    fn call(&mut self, method: &str, params: Value) -> Value {
        let response = self.request(method, params);
        assert!(response.get("error").is_none(), "{method}: {response:#}");
        response["result"].clone()
    }

    fn notify(&mut self, method: &str, params: Value) {
        self.send(json!({"jsonrpc": "2.0", "method": method, "params": params}));
    }

    /// The next notification of `method` (skipping others).
    fn wait_for(&mut self, method: &str) -> Value {
        if let Some(i) = self
            .notifications
            .iter()
            .position(|n| n["method"] == method)
        {
            return self.notifications.remove(i)["params"].clone();
        }
        loop {
            let message = self.next();
            if message["method"] == method {
                return message["params"].clone();
            }
            self.notifications.push(message);
        }
    }

    fn initialize(&mut self) -> Value {
        let result = self.call(
            "initialize",
            json!({"processId": null, "rootUri": self.dir_uri, "capabilities": {}}),
        );
        self.notify("initialized", json!({}));
        result
    }

    /// Pretty JSON with the temporary directory's URI made stable.
    fn show(&self, value: &Value) -> String {
        serde_json::to_string_pretty(value)
            .expect("JSON")
            .replace(&self.dir_uri, "file:///DIR")
            .replace(
                &format!("\"version\": \"{}\"", env!("CARGO_PKG_VERSION")),
                "\"version\": \"VERSION\"",
            )
    }

    /// Waits for the process to end; its exit code.
    fn exit_code(mut self) -> i32 {
        drop(self.stdin.take());
        self.child
            .wait()
            .expect("wait for patronusc lsp")
            .code()
            .expect("exited normally")
    }
}

fn at(uri: &str, line: u32, character: u32) -> Value {
    json!({"textDocument": {"uri": uri}, "position": {"line": line, "character": character}})
}

/// The 0-based (line, column) of the `nth` occurrence of `needle`.
fn find(text: &str, needle: &str, nth: usize) -> (u32, u32) {
    let offset = text
        .match_indices(needle)
        .nth(nth)
        .unwrap_or_else(|| panic!("`{needle}` #{nth} not in the text"))
        .0;
    let line = text[..offset].matches('\n').count();
    let column = offset - text[..offset].rfind('\n').map_or(0, |i| i + 1);
    (line as u32, column as u32)
}

fn open(client: &mut Client, uri: &str, text: &str) -> Value {
    client.notify(
        "textDocument/didOpen",
        json!({"textDocument": {"uri": uri, "languageId": "patronus", "version": 1, "text": text}}),
    );
    client.wait_for("textDocument/publishDiagnostics")
}

#[test]
fn a_whole_editing_session() {
    let dir = TempDir::new("lsp-session");
    let path = dir.write("web.pf", POLICY);
    let mut client = Client::start(&dir);
    let uri = format!("{}/web.pf", client.dir_uri);

    let init = client.initialize();
    insta::assert_snapshot!("initialize", client.show(&init));

    // Diagnostics as `check` reports them: same codes, same places, same
    // messages.
    let published = open(&mut client, &uri, POLICY);
    assert_eq!(published["uri"], json!(uri));
    insta::assert_snapshot!("diagnostics", client.show(&published));
    let check = patronusc(&dir.0, &["check", "--format", "json", "web.pf"]);
    let from_check: Vec<(String, u64, u64, u64, u64, String)> = check
        .stdout
        .lines()
        .map(|l| {
            let d: Value = serde_json::from_str(l).expect("check's JSON");
            (
                d["code"].as_str().unwrap().to_string(),
                d["line"].as_u64().unwrap(),
                d["column"].as_u64().unwrap(),
                d["end_line"].as_u64().unwrap(),
                d["end_column"].as_u64().unwrap(),
                d["message"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let from_lsp: Vec<(String, u64, u64, u64, u64, String)> = published["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let r = &d["range"];
            (
                d["code"].as_str().unwrap().to_string(),
                r["start"]["line"].as_u64().unwrap() + 1,
                r["start"]["character"].as_u64().unwrap() + 1,
                r["end"]["line"].as_u64().unwrap() + 1,
                r["end"]["character"].as_u64().unwrap() + 1,
                d["message"]
                    .as_str()
                    .unwrap()
                    .lines()
                    .next()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(from_lsp, from_check);
    assert_eq!(
        from_lsp.iter().map(|d| d.0.as_str()).collect::<Vec<_>>(),
        ["P0103", "P0101"],
        "the fixture has a shadowed rule and host bits"
    );

    // Hover: a constant (a set through another constant), a table, a test step.
    let (l, c) = find(POLICY, "$admin", 0);
    let hover = client.call("textDocument/hover", at(&uri, l, c + 2));
    insta::assert_snapshot!("hover_const", client.show(&hover));
    let (l, c) = find(POLICY, "@blocklist", 0);
    let hover = client.call("textDocument/hover", at(&uri, l, c));
    insta::assert_snapshot!("hover_table", client.show(&hover));
    let (l, c) = find(POLICY, "expect drop", 0);
    let hover = client.call("textDocument/hover", at(&uri, l, c));
    insta::assert_snapshot!("hover_test_step", client.show(&hover));
    let (l, _) = find(POLICY, "# a small", 0);
    assert_eq!(
        client.call("textDocument/hover", at(&uri, l, 3)),
        Value::Null
    );

    // Definition of `$ops` (used inside another constant), references of
    // `$web` with and without its declaration.
    let (l, c) = find(POLICY, "$ops", 0);
    let definition = client.call("textDocument/definition", at(&uri, l, c + 1));
    insta::assert_snapshot!("definition", client.show(&definition));
    let (l, c) = find(POLICY, "web", 1);
    let mut params = at(&uri, l, c);
    params["context"] = json!({"includeDeclaration": true});
    let references = client.call("textDocument/references", params.clone());
    insta::assert_snapshot!("references", client.show(&references));
    params["context"] = json!({"includeDeclaration": false});
    let without = client.call("textDocument/references", params);
    assert_eq!(without.as_array().unwrap().len(), 1);

    // Completion after `$`, after `type`, inside `options`, elsewhere.
    let edited = POLICY.replace("to port 53", "to port $");
    client.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": uri, "version": 2}, "contentChanges": [{"text": edited}]}),
    );
    let (l, c) = find(&edited, "$\n", 0);
    let items = client.call("textDocument/completion", at(&uri, l, c + 1));
    insta::assert_snapshot!("completion_const", client.show(&items));
    let edited = POLICY.replace("to port 53", "to port 53\nallow icmp type e");
    client.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": uri, "version": 3}, "contentChanges": [{"text": edited}]}),
    );
    let (l, c) = find(&edited, "type e", 0);
    let items = client.call("textDocument/completion", at(&uri, l, c + 6));
    let labels: Vec<&str> = items
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["label"].as_str().unwrap())
        .collect();
    assert!(labels.contains(&"echo-request") && labels.contains(&"packet-too-big"));
    assert!(!labels.contains(&"allow"), "{labels:?}");
    let (l, _) = find(&edited, "default = deny", 0);
    let items = client.call("textDocument/completion", at(&uri, l, 2));
    insta::assert_snapshot!("completion_options", client.show(&items));
    let (l, _) = find(&edited, "allow tcp to", 0);
    let items = client.call("textDocument/completion", at(&uri, l, 0));
    let labels: Vec<&str> = items
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["label"].as_str().unwrap())
        .collect();
    for expected in ["allow", "deny", "test", "$web", "@blocklist", "echo-reply"] {
        assert!(labels.contains(&expected), "{expected} in {labels:?}");
    }

    // Back to the file as saved; a syntax error as you type, then fixed.
    let broken = POLICY.replace("to port 22 label \"ssh\"", "to port label \"ssh\"");
    client.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": uri, "version": 4}, "contentChanges": [{"text": broken}]}),
    );
    client.notifications.clear();
    let published = client.wait_for("textDocument/publishDiagnostics");
    // The three changes before each published theirs: take the last.
    let mut published = published;
    while published["diagnostics"]
        .as_array()
        .is_some_and(|d| !d.iter().any(|d| d["code"] == "P0001"))
    {
        published = client.wait_for("textDocument/publishDiagnostics");
    }
    insta::assert_snapshot!("diagnostics_syntax", client.show(&published));
    let refused = client.request(
        "textDocument/formatting",
        json!({"textDocument": {"uri": uri}, "options": {"tabSize": 2, "insertSpaces": true}}),
    );
    insta::assert_snapshot!("formatting_refused", client.show(&refused));

    client.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": uri, "version": 5}, "contentChanges": [{"text": POLICY}]}),
    );
    let formatting = client.call(
        "textDocument/formatting",
        json!({"textDocument": {"uri": uri}, "options": {"tabSize": 2, "insertSpaces": true}}),
    );
    insta::assert_snapshot!("formatting", client.show(&formatting));
    let formatted = formatting[0]["newText"].as_str().unwrap();
    assert_eq!(
        Some(formatted.to_string()),
        patronus_grammar::fmt::format(POLICY).ok(),
        "the edit is `patronusc fmt`'s output"
    );

    // Quick fixes: remove the shadowed rule; clear the host bits.
    let (l, _) = find(POLICY, "allow tcp from 203.0.113.5", 0);
    let actions = client.call(
        "textDocument/codeAction",
        json!({"textDocument": {"uri": uri},
               "range": {"start": {"line": l, "character": 0}, "end": {"line": l, "character": 0}},
               "context": {"diagnostics": []}}),
    );
    insta::assert_snapshot!("code_action_shadowed", client.show(&actions));
    let (l, c) = find(POLICY, "10.1.2.3/8", 0);
    let actions = client.call(
        "textDocument/codeAction",
        json!({"textDocument": {"uri": uri},
               "range": {"start": {"line": l, "character": c}, "end": {"line": l, "character": c + 3}},
               "context": {"diagnostics": []}}),
    );
    insta::assert_snapshot!("code_action_host_bits", client.show(&actions));
    // Applying every preferred fix and the rule removal leaves a policy
    // that `check` finds clean.
    let fixed = POLICY
        .replace("allow tcp from 203.0.113.5 to port 22\n", "")
        .replace("10.1.2.3/8", "10.0.0.0/8");
    let removal = &client.call(
        "textDocument/codeAction",
        json!({"textDocument": {"uri": uri},
               "range": {"start": {"line": find(POLICY, "allow tcp from 203", 0).0, "character": 0}, "end": {"line": find(POLICY, "allow tcp from 203", 0).0, "character": 0}},
               "context": {"diagnostics": []}}),
    )[0]["edit"]["changes"][&uri][0];
    assert_eq!(removal["newText"], "");
    dir.write("fixed.pf", &fixed);
    let check = patronusc(&dir.0, &["check", "--deny-warnings", "fixed.pf"]);
    assert_eq!(check.code, 0, "{}", check.stderr);

    // Code lenses on `expect` lines, and the command they run.
    let lenses = client.call(
        "textDocument/codeLens",
        json!({"textDocument": {"uri": uri}}),
    );
    insta::assert_snapshot!("code_lens", client.show(&lenses));
    let command = lenses[1]["command"].clone();
    let explained = client.call(
        "workspace/executeCommand",
        json!({"command": command["command"], "arguments": command["arguments"]}),
    );
    insta::assert_snapshot!("explain_command", explained.as_str().unwrap());
    let shown = client.wait_for("window/showMessage");
    assert_eq!(shown["message"], explained);

    // An unknown method is an error, not a crash.
    let unknown = client.request("textDocument/semanticTokens/full", json!({}));
    assert_eq!(unknown["error"]["code"], json!(-32601));

    // Closing clears the diagnostics (those published before are all in
    // by now: the server answers in order).
    client.notifications.clear();
    client.notify(
        "textDocument/didClose",
        json!({"textDocument": {"uri": uri}}),
    );
    let cleared = client.wait_for("textDocument/publishDiagnostics");
    assert_eq!(cleared["diagnostics"], json!([]));

    let shutdown = client.request("shutdown", Value::Null);
    assert_eq!(shutdown["result"], Value::Null);
    client.notify("exit", Value::Null);
    assert_eq!(client.exit_code(), 0);
    drop(path);
}

#[test]
fn exit_without_shutdown_is_exit_1() {
    let dir = TempDir::new("lsp-exit");
    let mut client = Client::start(&dir);
    client.initialize();
    client.notify("exit", Value::Null);
    assert_eq!(client.exit_code(), 1);
}

#[test]
fn table_files_load_beside_the_document() {
    let dir = TempDir::new("lsp-tables");
    dir.write("tables/bad.txt", "192.0.2.0/24\n198.51.100.1/24\n");
    let text = "table bad file \"tables/bad.txt\"\ndeny from @bad\n";
    dir.write("p.pf", text);
    let mut client = Client::start(&dir);
    client.initialize();
    let uri = format!("{}/p.pf", client.dir_uri);
    let published = open(&mut client, &uri, text);
    assert_eq!(published["diagnostics"], json!([]));
    // The table file's host-bits warning is published for the table file.
    let table = client.wait_for("textDocument/publishDiagnostics");
    assert_eq!(
        table["uri"],
        json!(format!("{}/tables/bad.txt", client.dir_uri))
    );
    assert_eq!(table["diagnostics"][0]["code"], "P0101");
    let (l, c) = find(text, "@bad", 0);
    let hover = client.call("textDocument/hover", at(&uri, l, c));
    let value = hover["contents"]["value"].as_str().unwrap();
    assert!(value.contains("2 prefixes (2 IPv4, 0 IPv6)"), "{value}");
    let shutdown = client.request("shutdown", Value::Null);
    assert_eq!(shutdown["result"], Value::Null);
    client.notify("exit", Value::Null);
    assert_eq!(client.exit_code(), 0);
}

/// 50,000 rules, each with a host-bits warning: the diagnostics arrive
/// whole and in time (each file is indexed once, not once per diagnostic:
/// converting them one index each took minutes).
#[test]
fn a_large_policy_gets_all_its_diagnostics() {
    let dir = TempDir::new("lsp-large");
    let mut policy = String::with_capacity(3_000_000);
    for i in 0..50_000u32 {
        let (a, b, c) = (i >> 15 & 255, i >> 7 & 255, (i & 127) * 2 + 1);
        policy.push_str(&format!("allow tcp from 10.{a}.{b}.{c}/31 to port 22\n"));
    }
    dir.write("large.pf", &policy);
    let mut client = Client::start(&dir);
    client.initialize();
    let uri = format!("{}/large.pf", client.dir_uri);
    let started = std::time::Instant::now();
    let published = open(&mut client, &uri, &policy);
    let elapsed = started.elapsed();
    let diagnostics = published["diagnostics"].as_array().expect("diagnostics");
    assert_eq!(diagnostics.len(), 50_000);
    assert_eq!(diagnostics[49_999]["range"]["start"]["line"], 49_999);
    assert!(elapsed.as_secs() < 60, "took {elapsed:?}");
    eprintln!("50,000 diagnostics published in {elapsed:?}");
    let shutdown = client.request("shutdown", Value::Null);
    assert_eq!(shutdown["result"], Value::Null);
    client.notify("exit", Value::Null);
    assert_eq!(client.exit_code(), 0);
}

/// Applies LSP text edits (ASCII text: columns are bytes) to `text`.
fn apply(text: &str, edits: &Value) -> String {
    let offset = |p: &Value| {
        let line = p["line"].as_u64().unwrap() as usize;
        let start: usize = text.split_inclusive('\n').take(line).map(str::len).sum();
        start + p["character"].as_u64().unwrap() as usize
    };
    let mut spans: Vec<(usize, usize, String)> = edits
        .as_array()
        .expect("edits")
        .iter()
        .map(|e| {
            (
                offset(&e["range"]["start"]),
                offset(&e["range"]["end"]),
                e["newText"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    spans.sort_by_key(|s| std::cmp::Reverse(s.0));
    let mut out = text.to_string();
    for (start, end, new) in spans {
        out.replace_range(start..end, &new);
    }
    out
}

#[test]
fn rename_and_removing_an_unused_constant() {
    let text = "const web = { 80, 443 }\nconst old = 22 # not used\ntable bad { 203.0.113.0/24 }\n\ndeny from @bad\nallow tcp to port $web\nallow udp to port $web\n";
    let dir = TempDir::new("lsp-rename");
    dir.write("p.pf", text);
    let mut client = Client::start(&dir);
    let init = client.initialize();
    assert_eq!(init["capabilities"]["renameProvider"], true);
    let uri = format!("{}/p.pf", client.dir_uri);
    let published = open(&mut client, &uri, text);
    assert_eq!(published["diagnostics"][0]["code"], "P0104");

    // Rename `$web` from a use: the definition and both uses change.
    let (l, c) = find(text, "$web", 1);
    let mut params = at(&uri, l, c + 1);
    params["newName"] = json!("$http");
    let edit = client.call("textDocument/rename", params.clone());
    let renamed = apply(text, &edit["changes"][&uri]);
    assert_eq!(
        renamed,
        text.replace("const web", "const http")
            .replace("$web", "$http")
    );
    // A keyword, a name already defined, or not a name: refused.
    for bad in ["allow", "old", "$9x", "a b"] {
        params["newName"] = json!(bad);
        let refused = client.request("textDocument/rename", params.clone());
        assert_eq!(refused["error"]["code"], -32602, "{bad}: {refused}");
    }
    // A table, from its definition.
    let (l, c) = find(text, "bad", 0);
    let mut params = at(&uri, l, c);
    params["newName"] = json!("blocklist");
    let edit = client.call("textDocument/rename", params);
    assert_eq!(
        apply(text, &edit["changes"][&uri]),
        text.replace("table bad", "table blocklist")
            .replace("@bad", "@blocklist")
    );

    // The unused constant's quick fix removes its line, comment and all.
    let (l, _) = find(text, "const old", 0);
    let actions = client.call(
        "textDocument/codeAction",
        json!({"textDocument": {"uri": uri},
               "range": {"start": {"line": l, "character": 7}, "end": {"line": l, "character": 7}},
               "context": {"diagnostics": []}}),
    );
    assert_eq!(actions[0]["title"], "Remove the unused constant");
    let fixed = apply(text, &actions[0]["edit"]["changes"][&uri]);
    assert_eq!(fixed, text.replace("const old = 22 # not used\n", ""));
    dir.write("fixed.pf", &fixed);
    let check = patronusc(&dir.0, &["check", "--deny-warnings", "fixed.pf"]);
    assert_eq!(check.code, 0, "{}", check.stderr);

    let shutdown = client.request("shutdown", Value::Null);
    assert_eq!(shutdown["result"], Value::Null);
    client.notify("exit", Value::Null);
    assert_eq!(client.exit_code(), 0);
}
