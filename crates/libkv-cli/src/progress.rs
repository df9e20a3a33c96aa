//! The progress bar of long work: on a terminal only (stderr), with the count,
//! the rate and the time left, drawn by indicatif.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use libkv_core::transfer::Progress;

pub struct Bar(ProgressBar);

impl Bar {
    /// A bar for `what` ("copied", "dumped"), drawn only when stderr is a terminal
    /// and the output is not for machines.
    pub fn new(what: &str, quiet: bool) -> Bar {
        let target = if quiet || !std::io::stderr().is_terminal() {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        };
        let bar = ProgressBar::with_draw_target(None, target);
        bar.set_style(
            ProgressStyle::with_template(&format!(
                "{{spinner}} [{{elapsed_precise}}] {{wide_bar}} {{human_pos}}/{{human_len}} keys {what} \
                 ({{per_sec}}, {{eta}} left)"
            ))
            .expect("the progress template is valid"),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        Bar(bar)
    }

    pub fn finish(&self) {
        self.0.finish_and_clear();
    }
}

impl Progress for Bar {
    fn total(&self, total: u64) {
        self.0.set_length(total);
    }

    fn advance(&self, n: u64) {
        self.0.inc(n);
    }
}
