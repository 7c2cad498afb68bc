//! One module per subcommand.

pub mod check;
pub mod dead_letter;
pub mod export;
pub mod normalize;
pub mod replay;
pub mod run;
pub mod simulate;
pub mod test_mapping;
pub mod ui;
pub mod validate;

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader};
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

/// Opens NDJSON input: the file, or standard input when the path is absent or `-`.
pub fn open_input(path: Option<&Path>) -> anyhow::Result<Box<dyn BufRead>> {
    Ok(match path {
        Some(p) if p.as_os_str() != "-" => {
            Box::new(BufReader::new(File::open(p).with_context(|| {
                format!("cannot open {}; check the path", p.display())
            })?))
        }
        _ => Box::new(BufReader::new(io::stdin())),
    })
}

/// Calls `each(line_number, line)` for every non-blank line (1-based numbers, blank lines
/// skipped but counted), as `iomt normalize` and `iomt test-mapping` read their input.
pub fn for_each_line(
    reader: Box<dyn BufRead>,
    mut each: impl FnMut(usize, Vec<u8>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    for (index, line) in reader.split(b'\n').enumerate() {
        let line = line.context("cannot read input")?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        each(index + 1, line)?;
    }
    Ok(())
}
