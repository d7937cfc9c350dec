//! The guides quote code from the examples instead of repeating it: a block marked
//! `<!-- quote: PATH -->` must appear verbatim in that file (relative to the workspace root),
//! so a quoted block cannot drift from the code that is compiled and tested.

use std::fs;
use std::path::Path;

const MARKER: &str = "<!-- quote: ";

#[test]
fn quoted_blocks_are_in_their_files() {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = docs.parent().expect("docs/ is inside the workspace");
    let mut quotes = 0;
    let mut stale = Vec::new();
    for entry in fs::read_dir(docs).expect("read docs/") {
        let path = entry.expect("a directory entry").path();
        if path.extension().is_none_or(|e| e != "md") {
            continue;
        }
        let guide = fs::read_to_string(&path).expect("read a guide");
        let mut lines = guide.lines().enumerate();
        while let Some((n, line)) = lines.next() {
            let Some(source) = line
                .strip_prefix(MARKER)
                .and_then(|r| r.strip_suffix(" -->"))
            else {
                continue;
            };
            let fence = lines.next().map(|(_, l)| l);
            assert!(
                fence.is_some_and(|l| l.starts_with("```")),
                "{}:{}: a quote marker must be followed by a code block",
                path.display(),
                n + 1
            );
            let block: Vec<&str> = lines
                .by_ref()
                .map(|(_, l)| l)
                .take_while(|l| !l.starts_with("```"))
                .collect();
            let block = block.join("\n");
            let file = fs::read_to_string(root.join(source)).unwrap_or_else(|e| {
                panic!("{}:{}: cannot read {source}: {e}", path.display(), n + 1)
            });
            quotes += 1;
            if !file.contains(&block) {
                stale.push(format!(
                    "{}:{} quotes {source}, which no longer contains it",
                    path.display(),
                    n + 1
                ));
            }
        }
    }
    assert!(stale.is_empty(), "{}", stale.join("\n"));
    assert!(
        quotes > 0,
        "no quoted blocks found: is the marker still {MARKER:?}?"
    );
}
