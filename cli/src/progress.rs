//! Pull progress while `apply --wait` (and `run`) wait for an Image: a progress bar on
//! a terminal, plain lines otherwise.
//!
//! The daemon writes the bytes of each layer of a pull in progress to the Image's
//! `status.pull` about once a second; the waiting command reads it with every poll and
//! hands it to a [`PullProgress`]. On a terminal (stderr) one line is redrawn in place:
//! `image/deb: pulling [#######.............] 35% 18.2Mi/52.1Mi, layer 1/2`. Otherwise
//! one line is printed per finished layer, so logs stay readable.

use std::collections::BTreeSet;
use std::io::{IsTerminal, Write};

use banger_controller::api::types::{LayerProgressView, ObjectView};

use crate::output::{format_bytes, short_digest};

/// Width of the bar, in characters.
const BAR_WIDTH: usize = 20;

/// Pure: the one-line summary of a pull (`None` when nothing is pulling).
pub fn bar_line(object: &str, layers: &[LayerProgressView]) -> Option<String> {
    if layers.is_empty() {
        return None;
    }
    let total: u64 = layers.iter().map(|l| l.total).sum();
    let bytes: u64 = layers.iter().map(|l| l.bytes.min(l.total)).sum();
    let done = layers.iter().filter(|l| l.done).count();
    let ratio = if total == 0 {
        0.0
    } else {
        bytes as f64 / total as f64
    };
    let filled = ((ratio * BAR_WIDTH as f64).round() as usize).min(BAR_WIDTH);
    Some(format!(
        "{object}: pulling [{}{}] {:>3}% {}/{}, {done}/{} layers done",
        "#".repeat(filled),
        ".".repeat(BAR_WIDTH - filled),
        (ratio * 100.0).round() as u64,
        format_bytes(bytes),
        format_bytes(total),
        layers.len()
    ))
}

/// Pure: the plain line of a finished layer.
pub fn layer_line(object: &str, index: usize, count: usize, layer: &LayerProgressView) -> String {
    format!(
        "{object}: layer {}/{count} {} pulled ({})",
        index + 1,
        short_digest(&layer.digest),
        format_bytes(layer.total)
    )
}

/// Shows the pulls of the objects being waited for, on stderr.
#[derive(Debug)]
pub struct PullProgress {
    terminal: bool,
    drawn: bool,
    announced: BTreeSet<(String, String)>,
}

impl Default for PullProgress {
    fn default() -> Self {
        Self::new(std::io::stderr().is_terminal())
    }
}

impl PullProgress {
    /// A display for a terminal (a redrawn bar) or not (plain lines).
    pub fn new(terminal: bool) -> Self {
        PullProgress {
            terminal,
            drawn: false,
            announced: BTreeSet::new(),
        }
    }

    /// Shows what `object`'s status says of its pull (nothing when it is not pulling).
    pub fn show(&mut self, object: &ObjectView) {
        let name = format!(
            "{}/{}",
            object.kind.as_str().to_ascii_lowercase(),
            object.metadata.name
        );
        let layers = &object.status.pull;
        let mut err = std::io::stderr().lock();
        if self.terminal {
            match bar_line(&name, layers) {
                Some(line) => {
                    let _ = write!(err, "\r{line}\x1b[K");
                    self.drawn = true;
                }
                None => self.finish_line(&mut err),
            }
        } else {
            for (i, layer) in layers.iter().enumerate() {
                if layer.done && self.announced.insert((name.clone(), layer.digest.clone())) {
                    let _ = writeln!(err, "{}", layer_line(&name, i, layers.len(), layer));
                }
            }
        }
        let _ = err.flush();
    }

    /// Ends a drawn bar with a newline (before other output).
    pub fn finish(&mut self) {
        let mut err = std::io::stderr().lock();
        self.finish_line(&mut err);
    }

    fn finish_line(&mut self, err: &mut impl Write) {
        if self.drawn {
            let _ = writeln!(err);
            self.drawn = false;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn layer(bytes: u64, total: u64, done: bool) -> LayerProgressView {
        LayerProgressView {
            digest: format!("sha256:{}", "ab".repeat(32)),
            bytes,
            total,
            done,
        }
    }

    #[test]
    fn the_bar_sums_every_layer() {
        assert_eq!(bar_line("image/deb", &[]), None);
        let line = bar_line(
            "image/deb",
            &[layer(1 << 20, 1 << 20, true), layer(0, 3 << 20, false)],
        )
        .unwrap();
        assert_eq!(
            line,
            "image/deb: pulling [#####...............]  25% 1Mi/4Mi, 1/2 layers done"
        );
        assert_eq!(
            layer_line("image/deb", 0, 2, &layer(1 << 20, 1 << 20, true)),
            "image/deb: layer 1/2 sha256:abababababab pulled (1Mi)"
        );
    }
}
