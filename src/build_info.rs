//! What this binary is: its version, the commit and date it was built from,
//! its target and the store backends compiled in (`convergent version`).
//! build.rs embeds the commit, date and target.

/// The text `convergent version`, `-V` and `--version` print after the name.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("CONVERGENT_COMMIT"),
    ", built ",
    env!("CONVERGENT_BUILD_DATE"),
    ")\ntarget: ",
    env!("CONVERGENT_TARGET"),
    "\nbackends: ",
    backends!(),
);

/// The day the binary was built (UTC, YYYY-MM-DD; `SOURCE_DATE_EPOCH`'s day
/// when the build set it).
pub const BUILD_DATE: &str = env!("CONVERGENT_BUILD_DATE");

/// The store backends, by [`crate::store::StoreKind`] name. Every backend is
/// always compiled in (there are no cargo features); a unit test keeps this
/// list in step with [`crate::store::StoreKind::ALL`].
pub const BACKENDS: &str = backends!();

// A macro, not only a const: `concat!` takes literals only.
macro_rules! backends {
    () => {
        "file, consul, etcd, zookeeper"
    };
}
use backends;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreKind;

    #[test]
    fn backends_name_every_store_kind() {
        let names: Vec<&str> = StoreKind::ALL.iter().map(|k| k.name()).collect();
        assert_eq!(BACKENDS, names.join(", "));
    }

    #[test]
    fn version_carries_the_commit_date_and_target() {
        assert!(VERSION.starts_with(env!("CARGO_PKG_VERSION")));
        assert!(VERSION.contains(&format!("commit {}", env!("CONVERGENT_COMMIT"))));
        let date = env!("CONVERGENT_BUILD_DATE");
        assert!(
            date.len() == 10 && date.as_bytes()[4] == b'-' && date.as_bytes()[7] == b'-',
            "{date}"
        );
        assert!(VERSION.contains(&format!("\ntarget: {}\n", env!("CONVERGENT_TARGET"))));
    }
}
