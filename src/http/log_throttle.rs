//! Log lines for things a flood repeats, at most one per interval, each saying how many it covers.
//!
//! Its own module because connections, body limits and the webhook all throttle their lines: a
//! shared helper inside one of them would make the others import it, and `limits` already
//! depends on `webhook` for refusing on headers.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// At most one log line per `every` for something a flood repeats, saying how many times it
/// happened since the last line.
pub(crate) struct LogThrottle {
    every: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl LogThrottle {
    pub(crate) const fn new(every: Duration) -> LogThrottle {
        LogThrottle {
            every,
            state: Mutex::new((None, 0)),
        }
    }

    /// Counts one occurrence; `Some(n)` when a line is due, `n` being the occurrences it covers.
    pub(crate) fn due(&self) -> Option<u64> {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.1 += 1;
        if state
            .0
            .is_some_and(|last| now.duration_since(last) < self.every)
        {
            return None;
        }
        let count = state.1;
        *state = (Some(now), 0);
        Some(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_throttled_log_says_how_many_it_covers() {
        let log = LogThrottle::new(Duration::from_secs(3600));
        assert_eq!(log.due(), Some(1));
        assert_eq!(log.due(), None);
        assert_eq!(log.due(), None);
        let log = LogThrottle::new(Duration::ZERO);
        assert_eq!(log.due(), Some(1));
        assert_eq!(log.due(), Some(1));
    }
}
