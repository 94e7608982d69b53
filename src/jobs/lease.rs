//! Job leases: which process runs a job right now. A row per job in the database names its
//! holder by host, pid and the process's start time; a holder that ran in this machine's
//! process table and is gone (killed with SIGKILL, crashed) loses its lease at once rather than
//! after the lease's lifetime. Anyone else's lease is waited out: from here we cannot tell
//! whether a process on another machine still runs.

use std::time::Duration;

use super::error::JobError;
use super::holder::{Holder, ThisProcess};
use crate::store::Store;

/// How long a job's lease lasts without renewal; renewed on every page.
const LEASE_TTL: Duration = Duration::from_secs(120);

/// A job's hold on its lease; renewed while the job runs, released at the end.
pub struct Lease<'a> {
    store: &'a Store,
    name: &'static str,
    holder: String,
}

impl<'a> Lease<'a> {
    /// Takes the lease `name`: free, expired, or held by a process of this host that is gone.
    /// Otherwise [`JobError::LeaseHeld`] says who holds it and until when.
    pub async fn acquire(store: &'a Store, name: &'static str) -> Result<Lease<'a>, JobError> {
        let here = ThisProcess::inspect();
        let holder = here
            .holder(&crate::clerk::sample::random_id("run"))
            .to_string();
        let lease = |holder| Lease {
            store,
            name,
            holder,
        };
        // The lease can change hands between two statements (released, expired, taken over by
        // another process); a few rounds settle it.
        for _ in 0..3 {
            if store.acquire_lease(name, &holder, LEASE_TTL).await? {
                return Ok(lease(holder));
            }
            let Some((current, expires_at)) = store.lease(name).await? else {
                continue;
            };
            if Holder::parse(&current).is_some_and(|h| here.outlived(&h)) {
                if store
                    .take_over_lease(name, &current, &holder, LEASE_TTL)
                    .await?
                {
                    tracing::warn!(
                        job = name,
                        previous = current,
                        "took over the job's lease from a process of this host that is gone \
                         (killed or crashed before releasing it)"
                    );
                    return Ok(lease(holder));
                }
                continue;
            }
            let now = crate::store::now();
            if expires_at <= now {
                continue;
            }
            return Err(JobError::LeaseHeld {
                job: name,
                holder: current,
                expires_at: expires_at.and_utc(),
                expires_in: (expires_at - now).to_std().unwrap_or_default(),
            });
        }
        Err(JobError::Refused(format!(
            "the {name} lease kept changing hands while this process tried to take it; try again"
        )))
    }

    /// Who holds this lease, as stored in the database.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Extends the lease; fails if another process took it meanwhile (this one stalled past
    /// the lease's lifetime), so two runs never interleave.
    pub(crate) async fn renew(&self) -> Result<(), JobError> {
        if self
            .store
            .acquire_lease(self.name, &self.holder, LEASE_TTL)
            .await?
        {
            Ok(())
        } else {
            Err(JobError::Refused(format!(
                "lost the {} lease to another process; stopping",
                self.name
            )))
        }
    }

    /// Gives the lease up at the end of the job, so the next run need not wait for it to expire.
    pub async fn release(self) -> Result<(), JobError> {
        self.store.release_lease(self.name, &self.holder).await?;
        Ok(())
    }
}
