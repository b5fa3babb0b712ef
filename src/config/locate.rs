//! Where each key of a YAML document stands, so that errors found after deserialisation can
//! point into the file. Paths look like `routes[2].upstream`.

use std::collections::HashMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// Line and column (both 1-based) of every key and sequence item in a document.
#[derive(Debug, Default)]
pub struct Locations {
    places: HashMap<String, (usize, usize)>,
}

impl Locations {
    /// Indexes `text`; a document that does not parse yields an empty index (the YAML error
    /// itself is reported by the deserialiser).
    pub fn index(text: &str) -> Self {
        let mut builder = Builder::default();
        let mut parser = Parser::new_from_str(text);
        if parser.load(&mut builder, false).is_err() {
            return Locations::default();
        }
        Locations {
            places: builder.places,
        }
    }

    /// The deepest key that starts on `line`, for errors found by line (variable expansion).
    pub fn key_at(&self, line: usize) -> Option<String> {
        self.places
            .iter()
            .filter(|(_, (l, _))| *l == line)
            .max_by_key(|(k, (_, col))| (*col, k.len()))
            .map(|(k, _)| k.clone())
    }

    /// The place of `path`, or of its closest ancestor that is in the file.
    pub fn find(&self, path: &str) -> Option<(usize, usize)> {
        let mut p = path;
        loop {
            if let Some(place) = self.places.get(p) {
                return Some(*place);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }
}

enum Frame {
    Map {
        path: String,
        key: Option<String>,
        /// No key seen yet: the first key's place also stands for a sequence item.
        first: bool,
    },
    Seq {
        path: String,
        index: usize,
    },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    places: HashMap<String, (usize, usize)>,
}

impl Builder {
    /// The path of the node that starts now, advancing the parent's position.
    fn child_path(&mut self, scalar: Option<&str>, mark: Marker) -> Option<String> {
        let place = (mark.line(), mark.col() + 1);
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Map { path, key, first }) => match key.take() {
                None => {
                    // This node is a key; a non-scalar key gets a placeholder name.
                    let k = scalar.unwrap_or("?").to_string();
                    let full = join(path, &k);
                    if std::mem::take(first) && path.ends_with(']') {
                        // The parser marks a block mapping after its first key; the key is
                        // where a reader looks for the item.
                        self.places.insert(path.clone(), place);
                    }
                    self.places.insert(full, place);
                    *key = Some(k);
                    None
                }
                Some(k) => Some(join(path, &k)),
            },
            Some(Frame::Seq { path, index }) => {
                let full = format!("{path}[{index}]");
                *index += 1;
                self.places.insert(full.clone(), place);
                Some(full)
            }
        }
    }
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(ref value, ..) => {
                self.child_path(Some(value), mark);
            }
            Event::Alias(_) => {
                self.child_path(None, mark);
            }
            Event::MappingStart(..) => {
                if let Some(path) = self.child_path(None, mark) {
                    self.stack.push(Frame::Map {
                        path,
                        key: None,
                        first: true,
                    });
                } else {
                    // A mapping used as a key: index it under a placeholder and move on.
                    self.stack.push(Frame::Map {
                        path: "?".into(),
                        key: None,
                        first: false,
                    });
                }
            }
            Event::SequenceStart(..) => {
                let path = self.child_path(None, mark).unwrap_or_else(|| "?".into());
                self.stack.push(Frame::Seq { path, index: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_keys_and_items() {
        let text = "server:\n  listen: [\"a\", \"b\"]\nroutes:\n  - host: x\n    upstream: echo://\n  - host: y\n";
        let loc = Locations::index(text);
        assert_eq!(loc.find("server"), Some((1, 1)));
        assert_eq!(loc.find("server.listen"), Some((2, 3)));
        assert_eq!(loc.find("routes[0].upstream"), Some((5, 5)));
        assert_eq!(loc.find("routes[1].host"), Some((6, 5)));
        // Unknown children fall back to the closest known parent.
        assert_eq!(loc.find("routes[1].nope.deeper"), Some((6, 5)));
        assert_eq!(loc.find("routes[1]"), Some((6, 5)));
    }
}
