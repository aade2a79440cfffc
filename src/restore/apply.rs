//! Applying a restore plan: no decisions, only the plan carried out. Leftovers of killed
//! restores are dropped, the new database is created beside the target (with its properties),
//! the backup restored into it and checked, then it is swapped in by renaming, and the replaced
//! database dropped (or kept). Any failure or interruption before the swap drops the new
//! database: the target is never touched until the backup's contents are complete.

use std::time::Instant;

use super::plan::{Action, Content, RestorePlan};
use super::properties;
use super::target::{self, Server};
use super::{RestoreError, RestoreReport, dump, export};
use crate::error::Cancel;
use crate::repository::Repository;

/// Carries out `plan`; `cancel` stops it (the new database is dropped, the target untouched).
///
/// # Errors
/// `RestoreError`; the target is as it was (except with `--in-place`).
pub async fn apply(
    repo: &Repository,
    plan: RestorePlan,
    cancel: &Cancel,
) -> Result<RestoreReport, RestoreError> {
    let started = Instant::now();
    let mut server = Server::connect(&plan.target).await?;
    for leftover in &plan.leftovers {
        tracing::warn!(database = %leftover, "dropping the database a killed restore left");
        target::drop(&server, leftover).await?;
    }
    for stray in &plan.strays {
        tracing::warn!(database = %stray, "a database of an earlier restore of this target is still there; drop it when it is not needed");
    }
    let like = match &plan.action {
        Action::Replace { properties, .. } => Some(properties),
        Action::Create | Action::InPlace => None,
    };
    let in_place = matches!(plan.action, Action::InPlace);
    if !in_place {
        properties::create(&server, &plan.build, like, &plan.manifest.id).await?;
    }
    let built = async {
        let bytes = tokio::select! {
            built = build(repo, &plan) => built?,
            interrupted = cancel.cancelled() => return Err(RestoreError::Interrupted(interrupted)),
        };
        if !in_place {
            properties::finish(&server, &plan.build, like, plan.owner.as_deref()).await?;
        }
        Ok(bytes)
    }
    .await;
    let raw_bytes = match built {
        Ok(bytes) => bytes,
        Err(e) => {
            if !in_place {
                discard(&server, &plan.build).await;
            }
            return Err(e);
        }
    };
    let target_name = plan.target.dbname();
    crate::progress::get().phase("swap");
    let previous = match &plan.action {
        Action::InPlace => "restored in place into the empty database".to_string(),
        Action::Create | Action::Replace { .. } => {
            if let Err(e) =
                target::swap(&mut server, target_name, &plan.build, plan.old.as_deref()).await
            {
                discard(&server, &plan.build).await;
                return Err(e);
            }
            tracing::info!(database = target_name, "the restored database is in place");
            replaced(&server, &plan).await
        }
    };
    Ok(RestoreReport {
        backup: plan.manifest.id.clone(),
        job: plan.manifest.job.clone(),
        database: target_name.to_string(),
        raw_bytes,
        duration: started.elapsed(),
        previous,
    })
}

/// Restores the backup's contents into the database being built.
async fn build(repo: &Repository, plan: &RestorePlan) -> Result<u64, RestoreError> {
    let into = plan.build_target();
    // What the build reads: the dump object, or the table objects loaded (the plan staged
    // an export's schema archive already).
    crate::progress::get().expect_bytes(match &plan.content {
        Content::Dump { object, .. } => object.stored_bytes,
        Content::Export(e) => e.tables.iter().map(|o| o.stored_bytes).sum(),
    });
    match &plan.content {
        Content::Dump {
            object, selection, ..
        } => {
            if let Some(s) = selection {
                s.warn_left_out();
            }
            dump::restore(repo, plan, object, selection.as_deref(), &into).await
        }
        Content::Export(e) => export::restore(repo, plan, e, &into).await,
    }
}

/// What became of the replaced database, for the report.
async fn replaced(server: &Server, plan: &RestorePlan) -> String {
    let (Action::Replace { keep_old, .. }, Some(old)) = (&plan.action, plan.old.as_deref()) else {
        return "created".to_string();
    };
    if *keep_old {
        return format!("the previous database is kept as '{old}'");
    }
    match target::drop(server, old).await {
        Ok(()) => "the previous database was dropped".to_string(),
        Err(e) => {
            let why = crate::error::report(&e);
            tracing::warn!(database = old, error = %why, "could not drop the replaced database");
            format!("the previous database is left as '{old}' (dropping it failed: {why})")
        }
    }
}

/// Drops the database a failed restore was building; the target was never touched.
async fn discard(server: &Server, build: &str) {
    match target::drop(server, build).await {
        Ok(()) => tracing::info!(
            database = build,
            "dropped the unfinished restore; the target is unchanged"
        ),
        Err(e) => tracing::error!(database = build, error = %crate::error::report(&e),
            "could not drop the unfinished restore (the target is unchanged); drop it by hand"),
    }
}
