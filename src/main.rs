//! The `portcullis` command line.
#![forbid(unsafe_code)]

/// mimalloc instead of the system allocator: a proxy allocates small, short-lived buffers on
/// every request, and glibc's malloc was a tenth of the request path's CPU (docs/BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use base64::Engine;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "portcullis",
    version,
    about = "Identity-aware reverse proxy and forward-auth server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve traffic as the configuration says.
    Serve {
        /// Configuration file [default: $PORTCULLIS_CONFIG or ./portcullis.yaml]
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Validate a configuration: print a summary, or every error as file:line:col.
    Check {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Print a random 32-byte key, base64-encoded (for session secrets).
    GenSecret,
    /// Read a password (or client secret) on stdin, one line, and print its argon2id hash.
    HashPassword,
    /// Print a new PEM private key (PKCS#8) for the issuer (`issuer.keys`).
    GenKey {
        /// ES256 (P-256), EdDSA (Ed25519) or RS256 (RSA 2048).
        #[arg(long, default_value = "ES256")]
        alg: String,
    },
    /// Print a new TOTP secret for a user of a local provider, its otpauth:// URI and a QR
    /// code for authenticator apps.
    GenTotp {
        /// The user name (as in the users file).
        #[arg(long)]
        user: String,
        /// The name authenticator apps show for the account.
        #[arg(long, default_value = "Portcullis")]
        issuer: String,
    },
}

fn config_path(given: Option<PathBuf>) -> PathBuf {
    given
        .or_else(|| std::env::var_os("PORTCULLIS_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("portcullis.yaml"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::HashPassword => hash_password(),
        Command::GenKey { alg } => match portcullis::gen_key_pem(&alg) {
            Ok(pem) => {
                print!("{pem}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("portcullis: {e}");
                ExitCode::FAILURE
            }
        },
        Command::GenTotp { user, issuer } => match portcullis::totp_enrolment(&user, &issuer) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("portcullis: {e}");
                ExitCode::FAILURE
            }
        },
        Command::GenSecret => {
            let mut key = [0u8; 32];
            rand::fill(&mut key);
            println!("{}", base64::engine::general_purpose::STANDARD.encode(key));
            ExitCode::SUCCESS
        }
        Command::Check { config } => {
            let path = config_path(config);
            match portcullis::config::load(&path) {
                Ok(rt) => {
                    let out = format!("{}: ok\n{}", path.display(), rt.summary());
                    // A closed pipe (`check | head`) is not an error of the config.
                    let _ =
                        std::io::Write::write_all(&mut std::io::stdout().lock(), out.as_bytes());
                    ExitCode::SUCCESS
                }
                Err(errors) => {
                    eprintln!("{errors}");
                    eprintln!("{}: {} error(s)", path.display(), errors.0.len());
                    ExitCode::FAILURE
                }
            }
        }
        Command::Serve { config } => {
            let path = config_path(config);
            let mut runtime = match portcullis::config::load(&path) {
                Ok(rt) => rt,
                Err(errors) => {
                    eprintln!("{errors}");
                    eprintln!(
                        "{}: {} error(s); not starting",
                        path.display(),
                        errors.0.len()
                    );
                    return ExitCode::FAILURE;
                }
            };
            portcullis::telemetry::init_logging(runtime.logging());
            if let Err(e) = runtime.activate(None) {
                eprintln!("portcullis: {e}");
                return ExitCode::FAILURE;
            }
            portcullis::telemetry::metrics::init();
            if let Err(e) = portcullis::server::run(runtime, path) {
                eprintln!("portcullis: {e:#}");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
    }
}

/// `hash-password`: one line from stdin (its line ending is not part of the password), its
/// argon2id PHC string on stdout. An empty password is refused.
fn hash_password() -> ExitCode {
    let mut line = String::new();
    if let Err(e) = std::io::stdin().read_line(&mut line) {
        eprintln!("portcullis: reading the password from stdin: {e}");
        return ExitCode::FAILURE;
    }
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        eprintln!(
            "portcullis: no password on stdin (e.g. echo -n 'secret' | portcullis hash-password)"
        );
        return ExitCode::FAILURE;
    }
    match portcullis::password::hash(password) {
        Ok(phc) => {
            println!("{phc}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("portcullis: {e}");
            ExitCode::FAILURE
        }
    }
}
