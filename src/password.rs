//! Password and client-secret hashes: argon2id PHC strings (`$argon2id$v=19$m=...`), as
//! `portcullis hash-password` prints them and the users file and `issuer.clients` hold them.
//!
//! New hashes use OWASP's argon2id parameters (m=19 MiB, t=2, p=1). Verification accepts any
//! argon2 PHC string (its parameters are in it) and compares in constant time. Checking a name
//! that has no hash runs [`verify_missing`] against a fixed hash of the same cost, so an
//! unknown user or client costs what a wrong password costs.

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::{Algorithm, Argon2, Params, Version};
use std::sync::LazyLock;

/// OWASP's recommended argon2id parameters: 19 MiB, 2 passes, 1 lane.
const MEMORY_KIB: u32 = 19 * 1024;
const PASSES: u32 = 2;
const LANES: u32 = 1;

fn hasher() -> Argon2<'static> {
    // The constants are valid parameters; checked by the tests.
    let params = Params::new(MEMORY_KIB, PASSES, LANES, None).expect("valid argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// An argon2id PHC string for `password`, with a random salt.
pub fn hash(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    hasher()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("hashing: {e}"))
}

/// Checks that `phc` is an argon2 PHC string Portcullis can verify against (for `check`).
pub fn check_phc(phc: &str) -> Result<(), String> {
    let parsed = PasswordHash::new(phc).map_err(|e| format!("not a PHC hash string: {e}"))?;
    match parsed.algorithm.as_str() {
        "argon2id" | "argon2i" | "argon2d" => Ok(()),
        other => Err(format!(
            "hash algorithm {other} is not accepted: use argon2id (portcullis hash-password)"
        )),
    }
}

/// Whether `password` matches `phc`; `false` for a malformed hash. Constant time in the
/// password (argon2 compares its output in constant time).
pub fn verify(password: &str, phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
}

/// A fixed hash with the parameters of new ones, to verify against when the name is unknown.
static DUMMY: LazyLock<String> =
    LazyLock::new(|| hash("portcullis: no such user").expect("hashing with valid parameters"));

/// Computes the fixed hash now (at start-up), so the first unknown name costs no more than
/// any other.
pub fn warm_up() {
    LazyLock::force(&DUMMY);
}

/// Spends the time a verification of an existing name would, and answers `false`: an unknown
/// name must not be told apart from a wrong password by the answer's timing.
pub fn verify_missing(password: &str) -> bool {
    let _ = verify(password, &DUMMY);
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_and_verify() {
        let h = hash("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify("correct horse", &h));
        assert!(!verify("correct hors", &h));
        assert!(!verify("correct horse", "not a hash"));
        assert!(check_phc(&h).is_ok());
        assert!(check_phc("$2b$12$abcdefghijklmnopqrstuv").is_err());
        assert!(check_phc("plain").is_err());
        assert!(!verify_missing("anything"));
        // Two hashes of one password differ (random salts).
        assert_ne!(hash("x").unwrap(), hash("x").unwrap());
    }
}
