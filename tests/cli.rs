//! The command line: `check`, `serve` with a bad file or without the admin listener,
//! `gen-secret`, `--version`, `--help`.
//! Config errors are printed one per line as `path:line:col: key: message`.

mod support;

use base64::Engine;
use std::path::Path;
use support::{raw_get, run_cli, Setup};

/// Runs `portcullis check --config FILE` on `yaml` written into a fresh directory.
fn check(yaml: &str) -> (Setup, String, Option<i32>, String, String) {
    let setup = Setup::new();
    let path = setup.write("portcullis.yaml", yaml);
    let path = path.to_string_lossy().into_owned();
    let (code, out, err) = run_cli(&["check", "--config", &path], setup.path(), &[]);
    (setup, path, code, out, err)
}

/// The error lines (`PATH:...`) of `stderr`, without the closing summary line.
fn error_lines<'a>(stderr: &'a str, path: &str) -> Vec<&'a str> {
    stderr
        .lines()
        .filter(|l| l.starts_with(&format!("{path}:")) && !l.contains(" error(s)"))
        .collect()
}

/// Asserts one of `lines` is exactly `path:line:col: key: ...` and contains `words`.
fn assert_error(lines: &[&str], path: &str, line: usize, col: usize, key: &str, words: &str) {
    let prefix = format!("{path}:{line}:{col}: {key}: ");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&prefix) && l.contains(words)),
        "expected a line starting {prefix:?} containing {words:?}, got:\n{}",
        lines.join("\n")
    );
}

const VALID: &str = r#"
server:
  listen: ["127.0.0.1:18080"]
  timeouts: { upstream_connect: 2s, upstream_read: 1m, idle: 90s }
admin:
  listen: 127.0.0.1:19901
headers:
  identity:
    X-User: "{user}"
routes:
  - name: app
    host: app.example.test
    upstream: http://127.0.0.1:3000
  - name: health
    path: /healthz
    upstream: "static://204"
  - name: debug
    host: "*.example.test"
    upstream: "echo://"
    websocket: false
"#;

#[test]
fn check_accepts_a_valid_file_and_prints_a_summary() {
    let (_setup, path, code, out, err) = check(VALID);
    assert_eq!(code, Some(0), "stdout: {out}\nstderr: {err}");
    assert!(out.contains(&path), "{out}");
    assert!(out.contains("ok"), "{out}");
    for name in ["app", "health", "debug"] {
        assert!(out.contains(name), "route {name} not in the summary: {out}");
    }
}

#[test]
fn check_accepts_the_quickstart_example() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/quickstart.yaml");
    let example = example.to_string_lossy().into_owned();
    let dir = tempfile::tempdir().expect("temporary directory");
    // What scripts/run sets: a session secret and the demo user's password hash.
    let hash = portcullis::password::hash("demo password").expect("hashing");
    let env = [
        (
            "PORTCULLIS_SESSION_SECRET",
            "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
        ),
        ("PORTCULLIS_DEMO_PASSWORD_HASH", hash.as_str()),
    ];
    let (code, out, err) = run_cli(&["check", "--config", &example], dir.path(), &env);
    assert_eq!(code, Some(0), "stdout: {out}\nstderr: {err}");
    assert!(out.contains("local provider local: 1 user(s)"), "{out}");
    assert!(out.contains("issuer: http://localhost:8080"), "{out}");
}

#[test]
fn check_reports_every_value_error_with_its_place() {
    let yaml = r#"server:
  listen: ["127.0.0.1:8080"]
  timeouts:
    upstream_read: 10x
  tls:
    listen: ["127.0.0.1:8443"]
    cert_file: missing-cert.pem
    key_file: missing-key.pem
routes:
  - host: app.test
    upstream: ftp://files.test
  - host: dup.test
    upstream: "static://200"
  - host: dup.test
    upstream: "static://204"
"#;
    let (_setup, path, code, out, err) = check(yaml);
    assert_ne!(code, Some(0), "stdout: {out}");
    let lines = error_lines(&err, &path);
    assert_error(
        &lines,
        &path,
        4,
        5,
        "server.timeouts.upstream_read",
        "invalid duration",
    );
    assert_error(
        &lines,
        &path,
        7,
        5,
        "server.tls.cert_file",
        "missing-cert.pem",
    );
    assert_error(
        &lines,
        &path,
        8,
        5,
        "server.tls.key_file",
        "missing-key.pem",
    );
    assert_error(&lines, &path, 11, 5, "routes[0].upstream", "ftp");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("{path}:14:")) && l.contains("duplicate")),
        "{err}"
    );
    assert_eq!(lines.len(), 5, "{err}");
    assert!(err.contains("5 error(s)"), "{err}");
}

#[test]
fn check_reports_an_unknown_key_with_its_place() {
    let yaml = "routes:\n  - upstream: \"echo://\"\n    websockets: true\n";
    let (_setup, path, code, _out, err) = check(yaml);
    assert_ne!(code, Some(0));
    let lines = error_lines(&err, &path);
    assert_error(&lines, &path, 3, 5, "routes[0].websockets", "unknown key");
    assert_eq!(lines.len(), 1, "{err}");
}

#[test]
fn check_reports_every_unknown_key() {
    let yaml = "servr:\n  listen: []\nroutes:\n  - upstream: \"echo://\"\n    hots: a.test\n";
    let (_setup, path, code, _out, err) = check(yaml);
    assert_ne!(code, Some(0));
    let lines = error_lines(&err, &path);
    assert_error(&lines, &path, 1, 1, "servr", "unknown key");
    assert_error(&lines, &path, 5, 5, "routes[0].hots", "unknown key");
}

#[test]
fn check_reports_an_unset_variable_with_its_place() {
    let yaml = "routes:\n  - upstream: \"echo://\"\n    host: ${PORTCULLIS_TEST_NEVER_SET}\n";
    let (_setup, path, code, _out, err) = check(yaml);
    assert_ne!(code, Some(0));
    let lines = error_lines(&err, &path);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("{path}:3:11: "))
                && l.contains("PORTCULLIS_TEST_NEVER_SET")
                && l.contains("not set")),
        "{err}"
    );
}

#[test]
fn check_expands_set_variables_and_defaults() {
    let setup = Setup::new();
    let path = setup.write(
        "portcullis.yaml",
        "routes:\n  - upstream: \"${TEST_UPSTREAM}\"\n    path: ${TEST_PATH:-/from-default}\n",
    );
    let path = path.to_string_lossy().into_owned();
    let (code, out, err) = run_cli(
        &["check", "--config", &path],
        setup.path(),
        &[("TEST_UPSTREAM", "static://204")],
    );
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("/from-default"), "{out}");
    assert!(out.contains("static"), "{out}");
}

/// Every error in one file is printed, whatever the mix: an unknown key must not hide the
/// value errors found in the rest of the file.
#[test]
fn check_reports_unknown_keys_together_with_value_errors() {
    let yaml = r#"server:
  timeouts:
    upstream_read: 10x
routes:
  - host: app.test
    upstrem: http://127.0.0.1:3000
    upstream: ftp://files.test
"#;
    let (_setup, path, code, _out, err) = check(yaml);
    assert_ne!(code, Some(0));
    let lines = error_lines(&err, &path);
    assert_error(&lines, &path, 6, 5, "routes[0].upstrem", "unknown key");
    assert_error(
        &lines,
        &path,
        3,
        5,
        "server.timeouts.upstream_read",
        "invalid duration",
    );
    assert_error(&lines, &path, 7, 5, "routes[0].upstream", "ftp");
}

/// An unset `${VAR}` must not hide the other errors of the file either.
#[test]
fn check_reports_an_unset_variable_together_with_other_errors() {
    let yaml = r#"server:
  timeouts:
    upstream_read: 10x
routes:
  - host: ${PORTCULLIS_TEST_NEVER_SET}
    upstream: ftp://files.test
"#;
    let (_setup, path, code, _out, err) = check(yaml);
    assert_ne!(code, Some(0));
    let lines = error_lines(&err, &path);
    assert!(
        lines.iter().any(
            |l| l.starts_with(&format!("{path}:5:")) && l.contains("PORTCULLIS_TEST_NEVER_SET")
        ),
        "{err}"
    );
    assert_error(
        &lines,
        &path,
        3,
        5,
        "server.timeouts.upstream_read",
        "invalid duration",
    );
    assert_error(&lines, &path, 6, 5, "routes[0].upstream", "ftp");
}

#[test]
fn check_reports_a_yaml_syntax_error_with_its_place() {
    let yaml = "routes:\n  - upstream: \"echo://\"\n   path: [\n";
    let (_setup, path, code, _out, err) = check(yaml);
    assert_ne!(code, Some(0));
    assert!(
        error_lines(&err, &path)
            .iter()
            .any(|l| l.starts_with(&format!("{path}:3:"))),
        "{err}"
    );
}

#[test]
fn check_refuses_a_missing_file() {
    let setup = Setup::new();
    let path = setup
        .path()
        .join("nope.yaml")
        .to_string_lossy()
        .into_owned();
    let (code, out, err) = run_cli(&["check", "--config", &path], setup.path(), &[]);
    assert_ne!(code, Some(0), "{out}");
    assert!(err.contains(&path), "{err}");
}

#[test]
fn config_path_defaults_to_the_environment_then_the_working_directory() {
    let setup = Setup::new();
    setup.write(
        "portcullis.yaml",
        "routes:\n  - { name: from-cwd, upstream: \"echo://\" }\n",
    );
    let other = setup.write(
        "elsewhere/custom.yaml",
        "routes:\n  - { name: from-env, upstream: \"echo://\" }\n",
    );
    let (code, out, err) = run_cli(&["check"], setup.path(), &[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("from-cwd"), "{out}");
    let (code, out, err) = run_cli(
        &["check"],
        setup.path(),
        &[("PORTCULLIS_CONFIG", &other.to_string_lossy())],
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("from-env"), "{out}");
}

#[test]
fn serve_refuses_an_invalid_file_with_the_same_messages_as_check() {
    let yaml = r#"server:
  listen: ["127.0.0.1:1"]
  timeouts: { idle: forever }
routes:
  - upstream: gopher://old.test
  - { path: /a, upstream: "static://204" }
  - { path: /a, upstream: "static://200" }
"#;
    let (setup, path, check_code, _out, check_err) = check(yaml);
    assert_ne!(check_code, Some(0));
    let (code, _out, serve_err) = run_cli(&["serve", "--config", &path], setup.path(), &[]);
    assert_ne!(
        code,
        Some(0),
        "serve started with an invalid file: {serve_err}"
    );
    let from_check = error_lines(&check_err, &path);
    let from_serve = error_lines(&serve_err, &path);
    assert_eq!(from_check.len(), 3, "{check_err}");
    assert_eq!(from_serve, from_check);
}

#[test]
fn gen_secret_prints_32_random_bytes_in_base64() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut seen = Vec::new();
    for _ in 0..2 {
        let (code, out, err) = run_cli(&["gen-secret"], dir.path(), &[]);
        assert_eq!(code, Some(0), "{err}");
        let text = out.trim();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap_or_else(|e| panic!("not base64 ({e}): {text:?}"));
        assert_eq!(bytes.len(), 32, "{text}");
        assert_eq!(out.lines().count(), 1, "{out:?}");
        seen.push(bytes);
    }
    assert_ne!(seen[0], seen[1], "two runs printed the same key");
}

#[test]
fn version_and_help() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let (code, out, _) = run_cli(&["--version"], dir.path(), &[]);
    assert_eq!(code, Some(0));
    assert_eq!(
        out.trim(),
        format!("portcullis {}", env!("CARGO_PKG_VERSION"))
    );

    let (code, out, _) = run_cli(&["--help"], dir.path(), &[]);
    assert_eq!(code, Some(0));
    for word in ["serve", "check", "gen-secret", "--version", "--help"] {
        assert!(out.contains(word), "{word} missing from --help:\n{out}");
    }
    let (code, out, _) = run_cli(&["check", "--help"], dir.path(), &[]);
    assert_eq!(code, Some(0));
    assert!(out.contains("--config"), "{out}");

    let (code, _, err) = run_cli(&["no-such-command"], dir.path(), &[]);
    assert_ne!(code, Some(0));
    assert!(!err.is_empty());
}

/// `admin: null`, `admin: { listen: null }` and `admin: { listen: off }` all mean "no admin
/// listener", and `check` says so; a misspelt key under `admin` is still an unknown key.
#[test]
fn check_accepts_a_disabled_admin_listener() {
    for admin in [
        "admin: null",
        "admin:",
        "admin: { listen: null }",
        "admin: { listen: off }",
    ] {
        let (_setup, path, code, out, err) = check(&format!(
            "server:\n  listen: [\"127.0.0.1:18080\"]\n{admin}\nroutes:\n  - upstream: \"static://204\"\n"
        ));
        assert_eq!(code, Some(0), "{admin}\nstdout: {out}\nstderr: {err}");
        assert!(out.contains(&format!("{path}: ok")), "{admin}: {out}");
        assert!(out.contains("  admin: off"), "{admin}: {out}");
    }
    let (_setup, path, code, out, err) =
        check("admin: { lisen: 127.0.0.1:9902 }\nroutes:\n  - upstream: \"static://204\"\n");
    assert_eq!(code, Some(1), "stdout: {out}\nstderr: {err}");
    assert_error(
        &error_lines(&err, &path),
        &path,
        1,
        10,
        "admin.lisen",
        "unknown key",
    );
}

/// The sockets the process `pid` listens on, as TCP ports (from /proc: the inodes of its open
/// sockets, looked up among the listening ones).
fn listening_ports(pid: u32) -> Vec<u16> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("reading /proc/PID/fd")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect();
    let mut ports = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // cols: sl local_address rem_address st ... inode (10th)
            if cols.len() > 9 && cols[3] == "0A" && inodes.iter().any(|i| i == cols[9]) {
                let port = cols[1].rsplit(':').next().unwrap_or_default();
                ports.push(u16::from_str_radix(port, 16).expect("hex port"));
            }
        }
    }
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// With `admin: null`, `serve` runs and proxies, and listens on nothing but its proxy port:
/// neither the default 127.0.0.1:9901 nor any other admin port.
#[tokio::test]
async fn serve_runs_without_an_admin_listener() {
    for admin in ["admin: null", "admin: { listen: off }"] {
        // No @ADMIN@ in the config: the harness sees it up through the HTTP listener.
        let pc = Setup::new().start(&format!(
            "server:\n  listen: [\"127.0.0.1:@HTTP@\"]\n  threads: 1\n{admin}\nroutes:\n  - path: /up\n    upstream: \"static://204\"\n"
        ));
        let r = raw_get(pc.http_port(), "app.test", "/up", &[]).await;
        assert_eq!(r.status, 204, "{admin}");
        assert_eq!(listening_ports(pc.pid()), [pc.http_port()], "{admin}");
        let started = pc
            .wait_for_stdout_line(|l| l.contains("\"portcullis starting\""))
            .await
            .expect("the start line");
        assert!(started.contains("\"admin\":\"None\""), "{admin}: {started}");
    }
}

/// `hash-password` reads one line (without its line ending) and prints an argon2id PHC
/// string that verifies that password; an empty one is refused.
#[test]
fn hash_password_prints_an_argon2id_hash_of_the_line() {
    use std::io::Write as _;
    let run = |input: &[u8]| {
        let mut child = std::process::Command::new(support::BIN)
            .arg("hash-password")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawning portcullis");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input)
            .expect("writing the password");
        child.wait_with_output().expect("hash-password output")
    };
    for input in [&b"s3cret pass\n"[..], b"s3cret pass\r\n", b"s3cret pass"] {
        let out = run(input);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let phc = String::from_utf8(out.stdout).unwrap();
        let phc = phc.trim_end();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(portcullis::password::verify("s3cret pass", phc));
        assert!(!portcullis::password::verify("s3cret pass\n", phc));
    }
    let out = run(b"\n");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no password"));
}
