//! Runs every conformance case as its own named test (see `conformance/src/lib.rs`).
//!
//! `cargo test -p conformance -- <filter>` runs a subset, e.g. `-- corpus/normalization/calc-`.

use libtest_mimic::{Arguments, Failed, Trial};

fn main() {
    let args = Arguments::from_args();
    let (cases, missing_corpus) = conformance::discover();
    let deviations = conformance::deviations();
    let mut trials = Vec::new();
    let corpus_present = missing_corpus.is_none();
    if let Some(path) = missing_corpus {
        let message = format!(
            "conformance corpus not found at {}; set IOMT_CONFORMANCE_DIR to the shared/conformance folder",
            path.display()
        );
        let in_ci = std::env::var("CI").is_ok_and(|v| v == "true");
        let trial = Trial::test("corpus/missing", move || Err(Failed::from(message.clone())));
        trials.push(if in_ci {
            trial
        } else {
            trial.with_ignored_flag(true)
        });
    }
    let known: std::collections::BTreeSet<_> = cases.iter().map(|c| c.name.clone()).collect();
    for name in deviations.keys() {
        let checkable = corpus_present || !name.starts_with("corpus/");
        if checkable && !known.contains(name) {
            let name = name.clone();
            trials.push(Trial::test(format!("deviations.toml/{name}"), move || {
                Err(Failed::from(format!(
                    "deviations.toml lists {name}, which is not a case; remove it"
                )))
            }));
        }
    }
    for case in cases {
        let name = case.name.clone();
        match deviations.get(&name) {
            Some(reason) => {
                let reason = reason.clone();
                // A deviation is reported as ignored with its reason; running it with
                // --include-ignored shows whether it still differs.
                trials.push(
                    Trial::test(format!("{name} [deviation: {reason}]"), move || {
                        case.run().map_err(Failed::from)
                    })
                    .with_ignored_flag(true),
                );
            }
            None => trials.push(Trial::test(name, move || case.run().map_err(Failed::from))),
        }
    }
    libtest_mimic::run(&args, trials).exit();
}
