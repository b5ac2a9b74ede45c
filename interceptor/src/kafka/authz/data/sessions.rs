//! Incremental fetch sessions (KIP-227) of one connection, and the policy they were
//! authorized under.
//!
//! An incremental Fetch omits the partitions already in the broker's session, so the
//! interceptor cannot re-check them; it can only know that they were checked when the session
//! was built by a full fetch. A session id is learned from the requests alone (reading it from
//! the broker's answer would mean touching every Fetch response): the first incremental
//! request after a full fetch carries, at epoch 1, the id the broker gave that full fetch.
//! Anything else (an unknown id, a session built under another policy generation) is answered
//! FETCH_SESSION_ID_NOT_FOUND, after which clients send a full fetch that is checked anew.

/// A connection rarely has more than one session (one per consumer per broker).
const MAX_SESSIONS: usize = 8;

/// Kafka's INITIAL_EPOCH: a full fetch that creates a session.
const INITIAL_EPOCH: i32 = 0;

/// Incremental fetch sessions of one connection.
#[derive(Debug, Default)]
pub struct FetchSessions {
    /// Session id → policy generation its partitions were authorized under.
    sessions: Vec<(i32, u64)>,
    /// The generation of the last full fetch that may have created a session, until an
    /// incremental request claims it.
    pending_full: Option<u64>,
}

impl FetchSessions {
    /// A full fetch (epoch 0 or -1) was authorized under `generation`; `session_id` is the
    /// session it closes (0 for none).
    pub(crate) fn full_fetch(&mut self, session_id: i32, epoch: i32, generation: u64) {
        self.forget(session_id);
        // Epoch -1 asks for no session at all.
        self.pending_full = (epoch == INITIAL_EPOCH).then_some(generation);
    }

    /// A full fetch was answered by the interceptor itself: no session was created.
    pub(crate) fn full_fetch_answered_locally(&mut self, session_id: i32) {
        self.forget(session_id);
        self.pending_full = None;
    }

    /// Whether an incremental request (epoch > 0) of `session_id` may go on: its session was
    /// authorized under `generation`.
    pub(crate) fn incremental(&mut self, session_id: i32, epoch: i32, generation: u64) -> bool {
        let known = match self.sessions.iter().find(|(id, _)| *id == session_id) {
            Some(&(_, authorized)) => Some(authorized),
            // The first incremental request after the full fetch that built the session.
            None if epoch == INITIAL_EPOCH + 1 && session_id != 0 => {
                self.pending_full.take().inspect(|&authorized| {
                    if self.sessions.len() >= MAX_SESSIONS {
                        self.sessions.remove(0);
                    }
                    self.sessions.push((session_id, authorized));
                })
            }
            None => None,
        };
        if known == Some(generation) {
            return true;
        }
        self.forget(session_id);
        false
    }

    fn forget(&mut self, session_id: i32) {
        self.sessions.retain(|(id, _)| *id != session_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_built_by_a_full_fetch_continues_under_the_same_policy() {
        let mut s = FetchSessions::default();
        s.full_fetch(0, 0, 7);
        assert!(s.incremental(42, 1, 7));
        assert!(s.incremental(42, 2, 7));
        // The policy changed: the session's partitions must be checked again.
        assert!(!s.incremental(42, 3, 8));
        assert!(!s.incremental(42, 4, 8), "a refused session stays refused");
    }

    #[test]
    fn unknown_sessions_are_refused() {
        let mut s = FetchSessions::default();
        assert!(!s.incremental(42, 1, 7), "no full fetch before");
        s.full_fetch(0, 0, 7);
        assert!(
            !s.incremental(42, 5, 7),
            "not the first epoch of a new session"
        );
        s.full_fetch(0, -1, 7);
        assert!(
            !s.incremental(42, 1, 7),
            "a sessionless full fetch builds nothing"
        );
        s.full_fetch(0, 0, 7);
        s.full_fetch_answered_locally(0);
        assert!(
            !s.incremental(42, 1, 7),
            "the interceptor's own answer builds nothing"
        );
    }

    #[test]
    fn a_full_fetch_built_under_an_old_policy_does_not_count() {
        let mut s = FetchSessions::default();
        s.full_fetch(0, 0, 7);
        assert!(!s.incremental(42, 1, 8));
    }

    #[test]
    fn a_full_fetch_closing_a_session_forgets_it_and_the_map_is_bounded() {
        let mut s = FetchSessions::default();
        s.full_fetch(0, 0, 1);
        assert!(s.incremental(42, 1, 1));
        s.full_fetch(42, 0, 1);
        assert!(!s.incremental(42, 2, 1));
        for id in 1..=20 {
            s.full_fetch(0, 0, 1);
            assert!(s.incremental(id, 1, 1));
        }
        assert_eq!(s.sessions.len(), MAX_SESSIONS);
        assert!(s.incremental(20, 2, 1));
        assert!(!s.incremental(1, 2, 1));
    }
}
