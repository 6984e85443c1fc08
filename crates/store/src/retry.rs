//! Retrying a database server that stops answering, the same way for every store: waits
//! doubling from 100 ms to 3.2 s, for one window (`--store-retry-s`) from an operation's first
//! failure (the last try, at its end, may add one attempt's timeout: 3 s to connect to
//! Tarantool, 5 s for MongoDB to select its server), and said on stderr once per outage: a
//! line when retries start, naming the server and the cause, and a line when it answers again
//! or they give up.

use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const FIRST_WAIT: Duration = Duration::from_millis(100);
const MAX_WAIT: Duration = Duration::from_millis(3200);

/// How long an operation is retried after its server stops answering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryWindow(pub Duration);

impl RetryWindow {
    /// What `--store-retry-s` defaults to.
    pub const DEFAULT: RetryWindow = RetryWindow(Duration::from_secs(20));
}

impl Default for RetryWindow {
    fn default() -> Self {
        RetryWindow::DEFAULT
    }
}

/// An operation that failed for good, and how long it was retried before.
#[derive(Debug)]
pub struct GaveUp<E> {
    pub error: E,
    /// None when the failure was not one worth retrying.
    pub retried_for: Option<Duration>,
}

impl<E> GaveUp<E> {
    /// ` (retried for N s)`, or nothing when it was not retried, for messages.
    pub fn retried_text(&self) -> String {
        self.retried_for.map_or(String::new(), |d| format!(" (retried for {:.0} s)", d.as_secs_f64()))
    }
}

/// The retries of every operation on one server.
pub struct Retrier {
    /// How the log names the server, e.g. `tarantool 127.0.0.1:3301`.
    server: String,
    window: RetryWindow,
    /// When the outage under way began to be retried, if one is.
    outage: Mutex<Option<Instant>>,
}

impl Retrier {
    pub fn new(server: String, window: RetryWindow) -> Self {
        Retrier { server, window, outage: Mutex::new(None) }
    }

    /// Runs `attempt` until it succeeds, fails with an error `transient` has no cause for, or
    /// the window since its first failure has passed. `transient` gives the cause of an error
    /// worth another try, in a few words, for the log.
    pub async fn run<T, E, F, Fut>(
        &self,
        mut attempt: F,
        transient: impl Fn(&E) -> Option<String>,
    ) -> Result<T, GaveUp<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut first_failure: Option<Instant> = None;
        let mut wait = FIRST_WAIT;
        loop {
            let error = match attempt().await {
                Ok(value) => {
                    self.answered();
                    return Ok(value);
                }
                Err(error) => error,
            };
            let Some(cause) = transient(&error) else {
                // An answer, if an error: the server is back.
                self.answered();
                return Err(GaveUp { error, retried_for: first_failure.map(|t| t.elapsed()) });
            };
            let since = *first_failure.get_or_insert_with(Instant::now);
            let retried_for = since.elapsed();
            if retried_for >= self.window.0 {
                self.gave_up(retried_for, &cause);
                return Err(GaveUp { error, retried_for: Some(retried_for) });
            }
            self.failing(&cause);
            // The last wait ends with the window, for one more try then.
            tokio::time::sleep(wait.min(self.window.0 - retried_for)).await;
            wait = (wait * 2).min(MAX_WAIT);
        }
    }

    fn failing(&self, cause: &str) {
        let mut outage = self.outage.lock().expect("outage state");
        if outage.is_none() {
            *outage = Some(Instant::now());
            eprintln!(
                "refacen: {} does not answer ({cause}); retrying for up to {} s (--store-retry-s)",
                self.server,
                self.window.0.as_secs()
            );
        }
    }

    fn answered(&self) {
        if let Some(since) = self.outage.lock().expect("outage state").take() {
            eprintln!("refacen: {} answers again, after {:.1} s", self.server, since.elapsed().as_secs_f64());
        }
    }

    fn gave_up(&self, retried_for: Duration, cause: &str) {
        self.outage.lock().expect("outage state").take();
        eprintln!(
            "refacen: {} still does not answer ({cause}); gave up after {:.0} s of retries",
            self.server,
            retried_for.as_secs_f64()
        );
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Failure {
        NoAnswer,
        Refused,
    }

    fn cause(e: &Failure) -> Option<String> {
        (*e == Failure::NoAnswer).then(|| "no answer".to_string())
    }

    #[tokio::test]
    async fn retries_until_the_server_answers_again() {
        let retrier = Retrier::new("test server".into(), RetryWindow(Duration::from_secs(20)));
        let attempts = Cell::new(0);
        let result = retrier
            .run(
                || {
                    attempts.set(attempts.get() + 1);
                    let n = attempts.get();
                    async move { if n < 4 { Err(Failure::NoAnswer) } else { Ok(n) } }
                },
                cause,
            )
            .await;
        assert_eq!(result.unwrap(), 4);
        assert!(retrier.outage.lock().unwrap().is_none(), "the outage is over");
    }

    /// Runs an operation that always fails with `failure` until `retrier` gives up; returns
    /// how it gave up and how many tries it made.
    async fn give_up_on(retrier: &Retrier, failure: Failure) -> (GaveUp<Failure>, u32) {
        let attempts = Cell::new(0);
        let gave_up = retrier
            .run(
                || {
                    attempts.set(attempts.get() + 1);
                    async move { Err::<(), _>(failure) }
                },
                cause,
            )
            .await
            .unwrap_err();
        (gave_up, attempts.get())
    }

    #[tokio::test]
    async fn gives_up_once_the_window_has_passed_and_never_retries_an_answer() {
        let window = Duration::from_millis(700);
        let retrier = Retrier::new("test server".into(), RetryWindow(window));
        let started = Instant::now();
        let (gave_up, attempts) = give_up_on(&retrier, Failure::NoAnswer).await;
        let retried_for = gave_up.retried_for.expect("retried");
        assert!(retried_for >= window && started.elapsed() >= window, "{retried_for:?}");
        // Waits of 100 and 200 ms, then the rest of the window (400 ms): four tries.
        assert_eq!(attempts, 4);

        let (refused, attempts) = give_up_on(&retrier, Failure::Refused).await;
        assert_eq!((refused.error, refused.retried_for, attempts), (Failure::Refused, None, 1));

        let no_retries = Retrier::new("test server".into(), RetryWindow(Duration::ZERO));
        let (gave_up, _) = give_up_on(&no_retries, Failure::NoAnswer).await;
        assert!(gave_up.retried_for.is_some_and(|d| d < Duration::from_millis(100)));
    }
}
