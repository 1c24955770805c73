//! The sink a template renders into, with the reconcile's limits: the text may not grow past
//! the memory limit, and the deadline and interrupts are checked as it grows. A template that
//! loops without writing is bounded by its engine's step limit instead.

use crate::reconcile::Budget;

/// How many writes pass between two checks of the clock and the interrupts.
const CHECK_EVERY: u32 = 256;

pub(super) struct Output<'a, 'b> {
    text: String,
    budget: &'a Budget<'b>,
    writes: u32,
    stopped: Option<String>,
}

impl<'a, 'b> Output<'a, 'b> {
    pub(super) fn new(budget: &'a Budget<'b>) -> Self {
        Output { text: String::new(), budget, writes: 0, stopped: None }
    }

    /// Why the output refused a write (the render's error then is this, not the engine's).
    pub(super) fn stopped(&mut self) -> Option<String> {
        self.stopped.take()
    }

    pub(super) fn into_string(self) -> String {
        self.text
    }

    fn accept(&mut self, s: &str) -> bool {
        if self.stopped.is_some() {
            return false;
        }
        if self.text.len() + s.len() > self.budget.limits.memory {
            self.stopped = Some(format!(
                "the rendered output grew past the limit of {} MiB (spec.limits.memoryMiB)",
                self.budget.limits.memory >> 20
            ));
            return false;
        }
        self.writes += 1;
        if self.writes.is_multiple_of(CHECK_EVERY) {
            if let Some(why) = self.budget.exhausted() {
                self.stopped = Some(why.to_string());
                return false;
            }
        }
        self.text.push_str(s);
        true
    }
}

impl std::fmt::Write for Output<'_, '_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        if self.accept(s) {
            Ok(())
        } else {
            Err(std::fmt::Error)
        }
    }
}

impl std::io::Write for Output<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let s = std::str::from_utf8(buf).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        if self.accept(s) {
            Ok(buf.len())
        } else {
            Err(std::io::Error::other("render stopped"))
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
