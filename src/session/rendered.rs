//! The identity headers of a session, rendered once and kept with its cached record, and the
//! forward-auth answer head made of them: rendering allocates, and a session answers many
//! requests.

use crate::headers::FieldName;
use http::{HeaderMap, HeaderValue};
use std::borrow::Cow;
use std::fmt;
use std::sync::{Arc, OnceLock};

/// Identity headers rendered for one session under one set of templates: rendering them
/// allocates, and a session answers many requests. Part of no record's value: two records
/// compare equal whatever each has rendered.
#[derive(Clone, Default)]
pub struct RenderedHeaders(OnceLock<Rendered>);

/// The identity headers under one generation of templates, and what is made of them.
#[derive(Clone)]
struct Rendered {
    generation: u64,
    headers: HeaderList,
    /// The head of the session's forward-auth answers, built on its first check.
    head: OnceLock<HeaderMap>,
}

/// Header names and values, shared.
pub type HeaderList = Arc<[(FieldName, HeaderValue)]>;

/// Renders a session's identity headers.
type Render<'a> = &'a mut dyn FnMut() -> Vec<(FieldName, HeaderValue)>;

impl RenderedHeaders {
    /// The headers rendered under the templates of `generation`, rendering them with `render`
    /// the first time. Kept for the first generation asked for; another one renders afresh
    /// (the record is replaced from the store within `cache_ttl` anyway).
    pub fn get_or_render(
        &self,
        generation: u64,
        mut render: impl FnMut() -> Vec<(FieldName, HeaderValue)>,
    ) -> HeaderList {
        Arc::clone(&self.kept(generation, &mut render).headers)
    }

    /// A header map that `build` makes of the headers of `generation`, built once per
    /// session: a forward-auth answer's head, copied on every check instead of a hashed
    /// insert per header. Kept like the headers themselves.
    pub fn head_or_build(
        &self,
        generation: u64,
        mut render: impl FnMut() -> Vec<(FieldName, HeaderValue)>,
        build: impl FnOnce(&HeaderList) -> HeaderMap,
    ) -> HeaderMap {
        match self.kept(generation, &mut render) {
            Cow::Borrowed(kept) => kept.head.get_or_init(|| build(&kept.headers)).clone(),
            Cow::Owned(afresh) => build(&afresh.headers),
        }
    }

    /// What is kept for `generation`, rendered now if nothing is kept yet; rendered afresh,
    /// and not kept, for another generation.
    fn kept(&self, generation: u64, render: Render<'_>) -> Cow<'_, Rendered> {
        let kept = self.0.get_or_init(|| Rendered::new(generation, render()));
        if kept.generation == generation {
            Cow::Borrowed(kept)
        } else {
            Cow::Owned(Rendered::new(generation, render()))
        }
    }
}

impl Rendered {
    fn new(generation: u64, headers: Vec<(FieldName, HeaderValue)>) -> Rendered {
        Rendered {
            generation,
            headers: headers.into(),
            head: OnceLock::new(),
        }
    }
}

impl PartialEq for RenderedHeaders {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl fmt::Debug for RenderedHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RenderedHeaders")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The identity headers are rendered once per session and generation, and the check
    /// answer's head built once from them; another generation renders afresh, and keeps
    /// nothing of its own.
    #[test]
    fn rendered_headers_and_their_head_are_built_once_per_generation() {
        use std::cell::Cell;
        let rendered = RenderedHeaders::default();
        let renders = Cell::new(0);
        let builds = Cell::new(0);
        let render = |value: &'static str| {
            renders.set(renders.get() + 1);
            vec![(
                FieldName::new(http::HeaderName::from_static("x-user")),
                http::HeaderValue::from_static(value),
            )]
        };
        let build = |headers: &HeaderList| {
            builds.set(builds.get() + 1);
            let mut map = http::HeaderMap::new();
            for (n, v) in headers.iter() {
                map.insert(n.name.clone(), v.clone());
            }
            map
        };
        let head = |generation, value| {
            rendered.head_or_build(generation, || render(value), build)["x-user"].clone()
        };
        assert_eq!(head(1, "alice"), "alice");
        assert_eq!(head(1, "ignored: kept"), "alice");
        assert_eq!(
            rendered.get_or_render(1, || render("ignored"))[0].1,
            "alice"
        );
        assert_eq!((renders.get(), builds.get()), (1, 1));
        assert_eq!(head(2, "bob"), "bob", "another generation renders afresh");
        assert_eq!(head(2, "carol"), "carol", "and keeps nothing of its own");
        assert_eq!((renders.get(), builds.get()), (3, 3));
        assert_eq!(head(1, "ignored: kept"), "alice");
    }
}
