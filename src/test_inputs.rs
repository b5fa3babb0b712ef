//! Generated inputs for the tests that hold a rewritten function to the code it replaced.

/// Every string made of exactly `n` of `pieces` (repeats allowed, in every order):
/// `pieces.len()^n` strings.
pub(crate) fn concatenations(pieces: &[&str], n: u32) -> Vec<String> {
    (0..n).fold(vec![String::new()], |prefixes, _| {
        prefixes
            .iter()
            .flat_map(|prefix| pieces.iter().map(move |p| format!("{prefix}{p}")))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_order_of_every_piece() {
        assert_eq!(
            super::concatenations(&["a", "b"], 2),
            ["aa", "ab", "ba", "bb"]
        );
        assert_eq!(super::concatenations(&["x"], 0), [""]);
    }
}
