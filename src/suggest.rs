//! "Did you mean …?": the closest known name to one that is probably a
//! typo, so that `convreged` or `web-9` gets a hint instead of a bare refusal.

/// The candidate closest to `word` when it is close enough to be what was
/// meant: at most one edit for short words, two for longer ones, and never
/// `word` itself.
pub fn closest<'c>(word: &str, candidates: impl IntoIterator<Item = &'c str>) -> Option<&'c str> {
    let limit = if word.chars().count() <= 4 { 1 } else { 2 };
    candidates
        .into_iter()
        .filter(|c| *c != word)
        .map(|c| (distance(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, c)| (*d, *c))
        .map(|(_, c)| c)
}

/// `; did you mean "x"?` for the closest candidate, or nothing.
pub fn hint<'c>(word: &str, candidates: impl IntoIterator<Item = &'c str>) -> String {
    closest(word, candidates)
        .map(|c| format!("; did you mean {c:?}?"))
        .unwrap_or_default()
}

/// Edit distance with adjacent transpositions (`convreged` is one edit from
/// `converged`).
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_find_their_word_and_strangers_find_nothing() {
        let states = ["off", "waiting", "converged"];
        assert_eq!(closest("convreged", states), Some("converged"));
        assert_eq!(closest("of", states), Some("off"));
        assert_eq!(closest("waitng", states), Some("waiting"));
        assert_eq!(closest("bogus", states), None);
        assert_eq!(closest("off", states), None, "never the word itself");
        assert_eq!(closest("web-99", ["web-09", "web-10"]), Some("web-09"));
        assert_eq!(
            hint("desird", ["desired", "schema"]),
            "; did you mean \"desired\"?"
        );
        assert_eq!(hint("zzz", ["desired"]), "");
    }
}
