//! What the subcommands print: lines on stdout that end the command quietly once its reader
//! has gone (`refacen faces --json | head`), as Unix tools do, and errors in one line.

use std::io::Write;

use refacen_store::StoreError;

/// stdout was closed by its reader: the command stops, and refacen exits 0 without a word.
#[derive(Debug, thiserror::Error)]
#[error("stdout was closed")]
pub struct StdoutClosed;

/// Writes one line on stdout; a closed stdout is [`StdoutClosed`], any other failure an error.
pub fn write_line(line: std::fmt::Arguments) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_fmt(line).and_then(|()| stdout.write_all(b"\n")) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        Err(e) => Err(anyhow::Error::new(e).context("writing to stdout")),
    }
}

/// `println!` for the subcommands: returns from the enclosing function with [`StdoutClosed`]
/// once nobody reads stdout.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::output::write_line(format_args!($($arg)*))?
    };
}

/// Whether `e` is, or was caused by, a closed stdout.
pub fn is_stdout_closed(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| cause.is::<StdoutClosed>())
}

/// An error as refacen prints it: its chain of causes on one line, down to the store's
/// one-line account of a driver's error; with `verbose`, the driver's own error as well.
pub fn error_text(e: &anyhow::Error, verbose: bool) -> String {
    let mut parts = Vec::new();
    let mut hidden = false;
    for cause in e.chain() {
        let text = cause.to_string();
        // Many errors already end their message with their source's: say it once.
        if !parts.last().is_some_and(|last: &String| last.ends_with(&text)) {
            parts.push(text);
        }
        if !verbose && matches!(cause.downcast_ref::<StoreError>(), Some(StoreError::Driver { .. })) {
            hidden = true;
            break;
        }
    }
    let text = parts.join(": ");
    if hidden { format!("{text}\n(refacen -v ... adds the driver's own error)") } else { text }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read guest x.wasm: {source}")]
    struct Read {
        source: std::io::Error,
    }

    #[test]
    fn a_source_the_message_already_ends_with_is_said_once() {
        let e = anyhow::Error::new(Read { source: std::io::Error::other("gone") }).context("loading");
        assert_eq!(error_text(&e, false), "loading: cannot read guest x.wasm: gone");
        let e = anyhow::Error::new(std::io::Error::other("gone")).context("reading x");
        assert_eq!(error_text(&e, true), "reading x: gone");
    }
}
