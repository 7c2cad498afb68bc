//! One module per subcommand.

pub mod normalize;
pub mod validate;

use std::fs;
use std::path::Path;

use anyhow::Context;

/// Reads a mapping file, or the embedded default when no path is given.
pub fn read_mapping(
    path: Option<&Path>,
    default: &'static str,
    default_name: &str,
) -> anyhow::Result<(String, String)> {
    match path {
        Some(p) => {
            let text = fs::read_to_string(p)
                .with_context(|| format!("cannot read {}; check the path", p.display()))?;
            Ok((text, p.display().to_string()))
        }
        None => Ok((default.to_owned(), default_name.to_owned())),
    }
}
