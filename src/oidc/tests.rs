//! Unit tests of the relying party's pure parts.

use super::*;

const ISSUER: &str = "https://idp.example.com/realms/corp";

fn check(iss: &[&str], advertised: bool) -> Result<(), IssMismatch> {
    let iss: Vec<String> = iss.iter().map(|s| s.to_string()).collect();
    check_response_issuer(ISSUER, &iss, Some(advertised))
}

#[test]
fn the_response_issuer_must_be_exactly_the_providers() {
    for advertised in [true, false] {
        assert_eq!(check(&[ISSUER], advertised), Ok(()));
        // Present but not advertised is still compared (RFC 9207 section 2.4).
        for other in [
            "https://evil.example.com/realms/corp",
            "https://idp.example.com/realms/corp/",
            "https://IDP.example.com/realms/corp",
            "https://idp.example.com:443/realms/corp",
            "",
        ] {
            assert!(
                matches!(check(&[other], advertised), Err(IssMismatch::Other { .. })),
                "{other:?} accepted"
            );
        }
        assert_eq!(
            check(&[ISSUER, ISSUER], advertised),
            Err(IssMismatch::Repeated)
        );
        assert_eq!(
            check(&[ISSUER, "x"], advertised),
            Err(IssMismatch::Repeated)
        );
    }
    assert_eq!(check(&[], true), Err(IssMismatch::Missing));
    assert_eq!(check(&[], false), Ok(()));
    // A long made-up value is cut short before it reaches a log line.
    let long = "x".repeat(10_000);
    let err = check(&[&long], true).unwrap_err().to_string();
    assert!(err.len() < 400, "{err}");
}

#[test]
fn only_a_json_true_advertises_the_iss_parameter() {
    let read = |doc: &str| {
        serde_json::from_str::<super::discovery::ExtraProviderMetadata>(doc)
            .unwrap()
            .iss_parameter_supported()
    };
    assert!(read(
        r#"{"authorization_response_iss_parameter_supported": true}"#
    ));
    assert!(!read(
        r#"{"authorization_response_iss_parameter_supported": false}"#
    ));
    assert!(!read(
        r#"{"authorization_response_iss_parameter_supported": "true"}"#
    ));
    assert!(!read(
        r#"{"authorization_response_iss_parameter_supported": null}"#
    ));
    assert!(!read("{}"));
}
