//! `${VAR}` and `${VAR:-default}` expansion, done on the text before YAML parsing so that line
//! numbers stay true. Comments are left alone, so a commented-out `${SECRET}` is no error.

/// A variable that could not be expanded, with its 1-based place in the text.
#[derive(Debug, PartialEq, Eq)]
pub struct ExpandError {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

/// Expands variables using `lookup`; `$${` stands for a literal `${`. Returns the text and
/// the variables that could not be expanded (each replaced by nothing, so that the rest of
/// the file can still be checked).
///
/// A value containing a newline is refused: it would change the structure of the file
/// (use a `*_file` key for multi-line secrets).
pub fn expand(text: &str, lookup: impl Fn(&str) -> Option<String>) -> (String, Vec<ExpandError>) {
    let mut out = String::with_capacity(text.len());
    let mut errors = Vec::new();
    for (line_no, line) in text.split_inclusive('\n').enumerate() {
        expand_line(line, line_no + 1, &lookup, &mut out, &mut errors);
    }
    (out, errors)
}

fn expand_line(
    line: &str,
    line_no: usize,
    lookup: &impl Fn(&str) -> Option<String>,
    out: &mut String,
    errors: &mut Vec<ExpandError>,
) {
    let bytes = line.as_bytes();
    let mut i = 0;
    let mut quote: Option<u8> = None;
    while i < bytes.len() {
        let b = bytes[i];
        match (quote, b) {
            (None, b'#') if i == 0 || bytes[i - 1] == b' ' || bytes[i - 1] == b'\t' => {
                out.push_str(&line[i..]);
                return;
            }
            (None, b'\'' | b'"') => quote = Some(b),
            (Some(q), c) if c == q => {
                // '' inside single quotes is an escaped quote, not the end.
                if q == b'\'' && bytes.get(i + 1) == Some(&b'\'') {
                    out.push_str("''");
                    i += 2;
                    continue;
                }
                quote = None;
            }
            (Some(b'"'), b'\\') if i + 1 < bytes.len() => {
                out.push_str(&line[i..i + 2]);
                i += 2;
                continue;
            }
            (_, b'$') if line[i..].starts_with("$${") => {
                out.push_str("${");
                i += 3;
                continue;
            }
            (_, b'$') if line[i..].starts_with("${") => {
                let Some(end) = line[i..].find('}') else {
                    errors.push(ExpandError {
                        line: line_no,
                        col: i + 1,
                        message: "unterminated ${...}".into(),
                    });
                    out.push_str(&line[i..]);
                    return;
                };
                let inner = &line[i + 2..i + end];
                match resolve(inner, lookup) {
                    Ok(value) => out.push_str(&value),
                    Err(message) => errors.push(ExpandError {
                        line: line_no,
                        col: i + 1,
                        message,
                    }),
                }
                i += end + 1;
                continue;
            }
            _ => {}
        }
        // Copy one whole UTF-8 character.
        let ch_len = line[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&line[i..i + ch_len]);
        i += ch_len;
    }
}

fn resolve(inner: &str, lookup: &impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let (name, default) = match inner.split_once(":-") {
        Some((name, default)) => (name, Some(default)),
        None => (inner, None),
    };
    let valid_name = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid_name {
        return Err(format!("invalid variable name in ${{{inner}}}"));
    }
    let value = match (lookup(name), default) {
        (Some(v), _) if !(v.is_empty() && default.is_some()) => v,
        (_, Some(d)) => d.to_string(),
        (None, None) => return Err(format!("environment variable {name} is not set")),
        (Some(v), None) => v,
    };
    if value.contains('\n') || value.contains('\r') {
        return Err(format!(
            "environment variable {name} contains a newline; use a *_file key for multi-line values"
        ));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("app.example.com".into()),
            "EMPTY" => Some(String::new()),
            "NL" => Some("a\nb".into()),
            _ => None,
        }
    }

    #[test]
    fn expands_set_variables_and_defaults() {
        let (out, errs) = expand("host: ${HOST}\nport: ${PORT:-8080}\ne: ${EMPTY:-x}\n", env);
        assert!(errs.is_empty());
        assert_eq!(out, "host: app.example.com\nport: 8080\ne: x\n");
    }

    #[test]
    fn unset_variable_is_an_error_with_its_place() {
        let (out, errs) = expand("a: 1\nb: x${MISSING}\n", env);
        assert_eq!(out, "a: 1\nb: x\n");
        assert_eq!(errs.len(), 1);
        assert_eq!((errs[0].line, errs[0].col), (2, 5));
        assert!(errs[0].message.contains("MISSING"));
    }

    #[test]
    fn comments_and_escapes_are_left_alone() {
        let (out, errs) = expand(
            "a: 1 # ${MISSING}\n# ${ALSO}\nb: \"#${HOST}\"\nc: $${HOST}\n",
            env,
        );
        assert!(errs.is_empty());
        assert_eq!(
            out,
            "a: 1 # ${MISSING}\n# ${ALSO}\nb: \"#app.example.com\"\nc: ${HOST}\n"
        );
    }

    #[test]
    fn newline_values_and_bad_names_are_refused() {
        assert_eq!(expand("a: ${NL}\n", env).1.len(), 1);
        assert_eq!(expand("a: ${1X}\n", env).1.len(), 1);
        assert_eq!(expand("a: ${OPEN\n", env).1.len(), 1);
    }
}
