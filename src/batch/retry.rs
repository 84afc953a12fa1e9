//! Retrying the failed items of a batch call (Kinesis `PutRecords`, Firehose
//! `PutRecordBatch`, SQS `SendMessageBatch`): only the items that failed transiently are
//! sent again, with exponential backoff and full jitter, while the deadline allows. A whole
//! call that fails transiently is retried the same way; one that fails for good is an error.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use super::policy;
use crate::telemetry;
use crate::upstream::{Action, IntegrationError};

/// What happened to one item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<R> {
    Ok(R),
    Failed {
        code: String,
        message: String,
        retryable: bool,
    },
}

/// First wait before a retry, and the longest.
const BASE: Duration = Duration::from_millis(50);
const CAP: Duration = Duration::from_secs(1);

/// Calls `call` with the items still to send until all succeeded or failed for good, or the
/// deadline is near. Returns one outcome per item, in order. If nothing got through and the
/// last whole call failed, that call's error is returned instead.
pub async fn with_retries<E, R, F, Fut>(
    action: Action,
    items: &[E],
    deadline: Instant,
    mut call: F,
) -> Result<Vec<Outcome<R>>, IntegrationError>
where
    E: Clone,
    R: Clone,
    F: FnMut(Vec<E>) -> Fut,
    Fut: Future<Output = Result<Vec<Outcome<R>>, IntegrationError>>,
{
    let mut results: Vec<Option<Outcome<R>>> = vec![None; items.len()];
    let mut todo: Vec<usize> = (0..items.len()).collect();
    let mut attempt = 0u32;
    let started = Instant::now();
    let mut previous: Option<IntegrationError> = None;
    loop {
        let mut again = Vec::new();
        let mut call_error = None;
        // A call (with the SDK's own retries) may not outlive the deadline: the caller acts on
        // the outcome then (answers, or spools), and a call still running could deliver
        // records the caller has already given up on.
        let answered = match tokio::time::timeout_at(
            deadline,
            call_bisecting(&mut call, items, &todo),
        )
        .await
        {
            Ok(answered) => answered,
            // The previous attempt's failure says more than "cut short".
            Err(_) => Err(previous.take().unwrap_or(IntegrationError::Timeout {
                action,
                timeout: deadline.saturating_duration_since(started),
            })),
        };
        match answered {
            Ok(outcomes) => {
                for (&i, outcome) in todo.iter().zip(outcomes) {
                    if let Outcome::Failed {
                        retryable: true, ..
                    } = &outcome
                    {
                        again.push(i);
                    }
                    results[i] = Some(outcome);
                }
            }
            Err(e) if e.retryable() => {
                for &i in &todo {
                    // An item the service already refused keeps that reason, which says more
                    // than a later call that did not get through (or was cut short by the
                    // deadline). Clients may see this; the detail goes to the log.
                    if results[i].is_none() {
                        results[i] = Some(Outcome::Failed {
                            code: "ServiceUnavailable".into(),
                            message: "the service could not be reached".into(),
                            retryable: true,
                        });
                    }
                }
                again.clone_from(&todo);
                call_error = Some(e);
            }
            Err(e) => return Err(e),
        }
        if again.is_empty() {
            break;
        }
        let wait = policy::backoff(attempt, BASE, CAP, jitter());
        if Instant::now() + wait >= deadline {
            tracing::warn!(
                items = again.len(),
                "Gave up retrying at the route's deadline."
            );
            let none_ok = !results.iter().any(|r| matches!(r, Some(Outcome::Ok(_))));
            if none_ok && let Some(e) = call_error {
                return Err(e);
            }
            break;
        }
        tokio::time::sleep(wait).await;
        previous = call_error;
        telemetry::retried(action.name(), again.len());
        attempt += 1;
        todo = again;
    }
    let failed = results
        .iter()
        .filter(|r| !matches!(r, Some(Outcome::Ok(_))))
        .count();
    if failed > 0 {
        telemetry::failed_items(action.name(), failed);
    }
    Ok(results
        .into_iter()
        .map(|r| {
            r.unwrap_or(Outcome::Failed {
                code: "NotAttempted".into(),
                message: String::new(),
                retryable: false,
            })
        })
        .collect())
}

/// One attempt at the items `todo` names: one call; and when the service refuses the whole
/// call for what its records hold (one record over a limit fails every record of the call),
/// each half on its own, and so on, until the records at fault are found. Those fail for
/// good with the service's error; the others go through as usual. Without this, one client's
/// record would fail every request batched with it.
async fn call_bisecting<E, R, F, Fut>(
    call: &mut F,
    items: &[E],
    todo: &[usize],
) -> Result<Vec<Outcome<R>>, IntegrationError>
where
    E: Clone,
    F: FnMut(Vec<E>) -> Fut,
    Fut: Future<Output = Result<Vec<Outcome<R>>, IntegrationError>>,
{
    let batch: Vec<E> = todo.iter().map(|&i| items[i].clone()).collect();
    match call(batch).await {
        Err(e) if e.caused_by_content() => {
            if let [_] = todo {
                let (code, message) = match &e {
                    IntegrationError::Service { code, message, .. } => {
                        (code.clone(), message.clone())
                    }
                    other => ("ValidationException".to_string(), other.to_string()),
                };
                return Ok(vec![Outcome::Failed {
                    code,
                    message,
                    retryable: false,
                }]);
            }
            telemetry::bisected(e.action().name());
            let (left, right) = todo.split_at(todo.len() / 2);
            let mut out = Box::pin(call_bisecting(call, items, left)).await?;
            out.extend(Box::pin(call_bisecting(call, items, right)).await?);
            Ok(out)
        }
        other => other,
    }
}

/// A number in `[0, 1)` for backoff jitter.
fn jitter() -> f64 {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

/// The client's answer for a batch call: `body` (the service's response shape) when every
/// item was accepted, otherwise an error that carries it and names the first failure.
pub fn accepted_or_rejected<R>(
    action: Action,
    outcomes: &[Outcome<R>],
    body: serde_json::Value,
) -> Result<serde_json::Value, IntegrationError> {
    let (failed, retryable, code) = summary(outcomes);
    if failed == 0 {
        return Ok(body);
    }
    Err(IntegrationError::RecordsRejected {
        action,
        failed,
        total: outcomes.len(),
        code,
        retryable,
        response: Box::new(body),
    })
}

/// Counts of failed items and whether every failure was transient.
pub fn summary<R>(outcomes: &[Outcome<R>]) -> (usize, bool, String) {
    let mut failed = 0;
    let mut transient = true;
    let mut code = String::new();
    for o in outcomes {
        if let Outcome::Failed {
            code: c, retryable, ..
        } = o
        {
            failed += 1;
            transient &= *retryable;
            if code.is_empty() {
                code.clone_from(c);
            }
        }
    }
    (failed, transient, code)
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    fn throttled() -> Outcome<u32> {
        Outcome::Failed {
            code: "ProvisionedThroughputExceededException".into(),
            message: "slow down".into(),
            retryable: true,
        }
    }

    /// Item 2 throttled, the others accepted.
    fn two_throttled(batch: Vec<u32>) -> Vec<Outcome<u32>> {
        batch
            .into_iter()
            .map(|i| if i == 2 { throttled() } else { Outcome::Ok(i) })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn only_failed_items_are_sent_again() {
        let sent: RefCell<Vec<Vec<u32>>> = RefCell::default();
        let deadline = Instant::now() + Duration::from_secs(10);
        let out = with_retries(
            Action::KinesisPutRecords,
            &[1u32, 2, 3, 4],
            deadline,
            |batch| {
                sent.borrow_mut().push(batch.clone());
                let first = sent.borrow().len() == 1;
                async move {
                    Ok(batch
                        .into_iter()
                        .map(|i| {
                            if first && i % 2 == 0 {
                                throttled()
                            } else {
                                Outcome::Ok(i * 10)
                            }
                        })
                        .collect())
                }
            },
        )
        .await
        .unwrap();
        assert_eq!(
            out,
            vec![
                Outcome::Ok(10),
                Outcome::Ok(20),
                Outcome::Ok(30),
                Outcome::Ok(40)
            ]
        );
        assert_eq!(*sent.borrow(), vec![vec![1, 2, 3, 4], vec![2, 4]]);
    }

    /// An item the service refused keeps that reason when a later call fails as a whole.
    #[tokio::test(start_paused = true)]
    async fn a_refused_item_keeps_its_reason_through_a_failed_call() {
        let calls = RefCell::new(0);
        let deadline = Instant::now() + Duration::from_millis(400);
        let out = with_retries(Action::KinesisPutRecords, &[1u32, 2], deadline, |batch| {
            *calls.borrow_mut() += 1;
            let first = *calls.borrow() == 1;
            async move {
                if !first {
                    return Err(IntegrationError::Timeout {
                        action: Action::KinesisPutRecords,
                        timeout: Duration::from_millis(5),
                    });
                }
                Ok(two_throttled(batch))
            }
        })
        .await
        .unwrap();
        assert!(*calls.borrow() >= 2, "retried");
        assert_eq!(out, vec![Outcome::Ok(1), throttled()]);
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_at_the_deadline_and_keeps_what_succeeded() {
        let calls = RefCell::new(0);
        let started = Instant::now();
        let deadline = started + Duration::from_secs(2);
        let out = with_retries(Action::KinesisPutRecords, &[1u32, 2], deadline, |batch| {
            *calls.borrow_mut() += 1;
            async move { Ok(two_throttled(batch)) }
        })
        .await
        .unwrap();
        assert_eq!(out[0], Outcome::Ok(1));
        assert_eq!(out[1], throttled());
        assert!(Instant::now() < deadline, "never sleeps past the deadline");
        assert!(
            *calls.borrow() >= 2,
            "retried with backoff: {} calls",
            calls.borrow()
        );
        let (failed, transient, code) = summary(&out);
        assert_eq!(
            (failed, transient, code.as_str()),
            (1, true, "ProvisionedThroughputExceededException")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn whole_call_errors() {
        let deadline = Instant::now() + Duration::from_millis(500);
        // Transient, and nothing got through by the deadline: the call's own error.
        let err = with_retries(Action::KinesisPutRecords, &[1u32], deadline, |_| async {
            Err::<Vec<Outcome<u32>>, _>(IntegrationError::Transport {
                action: Action::KinesisPutRecords,
                detail: "refused".into(),
            })
        })
        .await
        .unwrap_err();
        assert!(matches!(err, IntegrationError::Transport { .. }));
        // Permanent: returned at once, no retry.
        let calls = RefCell::new(0);
        let err = with_retries(Action::KinesisPutRecords, &[1u32], deadline, |_| {
            *calls.borrow_mut() += 1;
            async {
                Err::<Vec<Outcome<u32>>, _>(IntegrationError::Service {
                    action: Action::KinesisPutRecords,
                    status: 400,
                    code: "ResourceNotFoundException".into(),
                    message: "no stream".into(),
                })
            }
        })
        .await
        .unwrap_err();
        assert!(matches!(err, IntegrationError::Service { .. }));
        assert_eq!(*calls.borrow(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_refused_for_one_record_is_split_until_that_record_is_found() {
        let calls = RefCell::new(Vec::new());
        let deadline = Instant::now() + Duration::from_secs(10);
        let items: Vec<u32> = (0..16).collect();
        let out = with_retries(Action::KinesisPutRecords, &items, deadline, |batch| {
            calls.borrow_mut().push(batch.len());
            async move {
                if batch.contains(&11) {
                    return Err(IntegrationError::Service {
                        action: Action::KinesisPutRecords,
                        status: 400,
                        code: "ValidationException".into(),
                        message: "record too large".into(),
                    });
                }
                Ok(batch.into_iter().map(Outcome::Ok).collect())
            }
        })
        .await
        .unwrap();
        for (i, o) in out.iter().enumerate() {
            if i == 11 {
                assert!(
                    matches!(o, Outcome::Failed { code, retryable: false, .. } if code == "ValidationException"),
                    "{o:?}"
                );
            } else {
                assert_eq!(*o, Outcome::Ok(i as u32));
            }
        }
        // 16, then halves down to the one record: 2 calls per level, 4 levels.
        assert_eq!(calls.borrow().len(), 9, "{:?}", calls.borrow());
        // A refusal that is not about the records (a missing stream) is not split.
        let calls = RefCell::new(0);
        let err = with_retries(Action::KinesisPutRecords, &items, deadline, |_| {
            *calls.borrow_mut() += 1;
            async {
                Err::<Vec<Outcome<u32>>, _>(IntegrationError::Service {
                    action: Action::KinesisPutRecords,
                    status: 400,
                    code: "ResourceNotFoundException".into(),
                    message: "no stream".into(),
                })
            }
        })
        .await
        .unwrap_err();
        assert!(matches!(err, IntegrationError::Service { .. }));
        assert_eq!(*calls.borrow(), 1);
    }
}
