//! `qupiactl keys …`: the security team's key administration, through the gateway's
//! KeyAdminService (as the security identity, `qupiactl` by default).
//!
//! Tables by default, JSON lines with `--json`; rewrap and reindex follow the job with a
//! progress bar on standard error. `status --check` exits 1 when a KEK version's
//! encryption alarm is raised.

use anyhow::Context;
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use qupia_api::keys::v1::key_admin_service_client::KeyAdminServiceClient;
use qupia_api::keys::v1::*;
use tonic::transport::Channel;

use crate::client::status;
use crate::emit;

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// KEK versions with their data keys and encryptions, the minimum decryption
    /// version, blind-index key versions and running jobs.
    Status {
        /// Exit 1 when any KEK version's encryption alarm is raised.
        #[arg(long)]
        check: bool,
    },
    /// Make a new KEK version active; the previous one becomes decrypt-only.
    Rotate,
    /// Move every data key to the active KEK version (starts the job or follows the
    /// running one; Ctrl-C stops following, not the job).
    Rewrap {
        /// At most this many data keys per second (can only lower the vault's rate).
        #[arg(long)]
        rate: Option<u32>,
    },
    /// Refuse data keys under KEK versions older than VERSION until rewrapped (0 lifts it).
    MinVersion { version: u32 },
    /// Retire a KEK version nothing depends on any more.
    Retire { version: u32 },
    /// Destroy a retired KEK version for good: copies of data keys wrapped under it,
    /// old backups included, become unreadable.
    Destroy {
        version: u32,
        /// Confirm that the version is to be destroyed.
        #[arg(long)]
        yes: bool,
    },
    /// Make a new blind-index key version current.
    IndexRotate,
    /// Index every person under the current blind-index key (starts or follows the job).
    Reindex {
        /// At most this many people per second (can only lower the vault's rate).
        #[arg(long)]
        rate: Option<u32>,
    },
    /// Remove an old blind-index key version and its entries, once reindexed.
    IndexRemove { version: u32 },
}

fn state_name(state: i32) -> &'static str {
    match KeyState::try_from(state) {
        Ok(KeyState::Active) => "active",
        Ok(KeyState::DecryptOnly) => "decrypt_only",
        Ok(KeyState::Retired) => "retired",
        _ => "not in provider",
    }
}

fn job_name(kind: i32) -> &'static str {
    match JobKind::try_from(kind) {
        Ok(JobKind::Rewrap) => "rewrap",
        Ok(JobKind::Reindex) => "reindex",
        _ => "unknown",
    }
}

fn job_json(job: &JobProgress) -> serde_json::Value {
    serde_json::json!({
        "job": job_name(job.kind),
        "state": if job.state == JobState::Finished as i32 { "finished" } else { "running" },
        "target_version": job.target_version, "done": job.done, "total": job.total,
        "skipped": job.skipped, "rate_per_second": job.rate_per_second,
        "requested_by": job.requested_by, "started_at_ms": job.started_at_ms, "updated_at_ms": job.updated_at_ms,
    })
}

fn print_status(status: &GetKeyStatusResponse, json: bool) -> anyhow::Result<()> {
    if json {
        return emit(serde_json::json!({
            "provider": status.provider,
            "kek_versions": status.kek_versions.iter().map(|k| serde_json::json!({
                "version": k.version, "state": state_name(k.state), "wrapped_deks": k.wrapped_deks,
                "encryptions": k.encryptions, "encryption_alarm": k.encryption_alarm,
            })).collect::<Vec<_>>(),
            "min_decrypt_version": status.min_decrypt_version,
            "deks_below_min_decrypt_version": status.deks_below_min_decrypt_version,
            "index_key_versions": status.index_key_versions.iter().map(|k| serde_json::json!({
                "version": k.version, "current": k.current, "entries": k.entries,
            })).collect::<Vec<_>>(),
            "jobs": status.jobs.iter().map(job_json).collect::<Vec<_>>(),
            "encryption_alarm_threshold": status.encryption_alarm_threshold,
            "encryption_alarm": status.encryption_alarm,
        }));
    }
    emit(format_args!("provider  {}", status.provider))?;
    emit(format_args!("{:>7}  {:<15} {:>12} {:>14}  alarm", "kek", "state", "data keys", "encryptions"))?;
    for kek in &status.kek_versions {
        emit(format_args!(
            "{:>7}  {:<15} {:>12} {:>14}  {}",
            kek.version,
            state_name(kek.state),
            kek.wrapped_deks,
            kek.encryptions,
            if kek.encryption_alarm { "ALARM: rotate" } else { "-" }
        ))?;
    }
    emit(format_args!(
        "minimum decryption version {} ({} data keys below it are refused until rewrapped)",
        status.min_decrypt_version, status.deks_below_min_decrypt_version
    ))?;
    emit(format_args!("encryption alarm at {} per version", status.encryption_alarm_threshold))?;
    emit(format_args!("{:>7}  {:<8} {:>12}", "index", "current", "entries"))?;
    for key in &status.index_key_versions {
        emit(format_args!("{:>7}  {:<8} {:>12}", key.version, if key.current { "yes" } else { "no" }, key.entries))?;
    }
    for job in &status.jobs {
        let state = if job.state == JobState::Finished as i32 { "finished" } else { "running" };
        emit(format_args!(
            "job {:<8} {:<9} to version {}: {}/{} done, {} skipped, {}/s, started by {}",
            job_name(job.kind),
            state,
            job.target_version,
            job.done,
            job.total,
            job.skipped,
            job.rate_per_second,
            job.requested_by
        ))?;
    }
    Ok(())
}

/// Follows a job's progress stream to its end with a progress bar (or JSON lines).
async fn follow<T>(
    mut stream: tonic::Streaming<T>,
    progress_of: impl Fn(T) -> Option<JobProgress>,
    unit: &str,
    json: bool,
) -> anyhow::Result<JobProgress> {
    let bar =
        if json { ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden()) } else { ProgressBar::new(0) };
    let template = format!("{{bar:40}} {{pos}}/{{len}} {unit}  {{per_sec}}  eta {{eta}}");
    bar.set_style(ProgressStyle::with_template(&template).context("progress bar template")?);
    let mut last = None;
    while let Some(message) = stream.message().await.map_err(status)? {
        let Some(progress) = progress_of(message) else { continue };
        bar.set_length(progress.total.max(progress.done));
        bar.set_position(progress.done);
        if json {
            emit(job_json(&progress))?;
        }
        last = Some(progress);
    }
    bar.finish_and_clear();
    last.context("the job reported no progress")
}

fn summary(job: &JobProgress, what: &str, json: bool) -> anyhow::Result<()> {
    if json {
        return Ok(());
    }
    emit(format_args!(
        "{} to version {} finished: {} {what} done, {} skipped",
        job_name(job.kind),
        job.target_version,
        job.done,
        job.skipped
    ))
}

/// Runs a keys command; returns false when `status --check` found an alarm.
pub async fn run(command: KeysCommand, channel: Channel, json: bool) -> anyhow::Result<bool> {
    let mut keys = KeyAdminServiceClient::new(channel);
    // The gateway names the caller from its certificate; nothing to claim here.
    let requester = String::new;
    match command {
        KeysCommand::Status { check } => {
            let response = keys.get_key_status(GetKeyStatusRequest { requester: requester() }).await.map_err(status)?;
            let response = response.into_inner();
            print_status(&response, json)?;
            return Ok(!(check && response.encryption_alarm));
        }
        KeysCommand::Rotate => {
            let rotated = keys.rotate_kek(RotateKekRequest { requester: requester() }).await.map_err(status)?;
            let rotated = rotated.into_inner();
            if json {
                emit(
                    serde_json::json!({"active_version": rotated.active_version, "previous_version": rotated.previous_version}),
                )?;
            } else {
                emit(format_args!(
                    "kek version {} is active; version {} is decrypt-only until rewrapped",
                    rotated.active_version, rotated.previous_version
                ))?;
            }
        }
        KeysCommand::Rewrap { rate } => {
            let request = RewrapRequest { requester: requester(), rate_per_second: rate.unwrap_or(0) };
            let stream = keys.rewrap(request).await.map_err(status)?.into_inner();
            let last = follow(stream, |m| m.progress, "data keys", json).await?;
            summary(&last, "data keys", json)?;
        }
        KeysCommand::MinVersion { version } => {
            let request = SetMinDecryptVersionRequest { requester: requester(), version };
            let set = keys.set_min_decrypt_version(request).await.map_err(status)?.into_inner();
            if json {
                emit(
                    serde_json::json!({"min_decrypt_version": set.min_decrypt_version, "deks_below": set.deks_below}),
                )?;
            } else {
                emit(format_args!(
                    "minimum decryption version {}: {} data keys are refused until rewrapped",
                    set.min_decrypt_version, set.deks_below
                ))?;
            }
        }
        KeysCommand::Retire { version } => {
            keys.retire_kek(RetireKekRequest { requester: requester(), version }).await.map_err(status)?;
            done(json, "retired", version)?;
        }
        KeysCommand::Destroy { version, yes } => {
            if !yes {
                anyhow::bail!("destroying kek version {version} cannot be undone; repeat with --yes");
            }
            keys.destroy_kek(DestroyKekRequest { requester: requester(), version }).await.map_err(status)?;
            done(json, "destroyed", version)?;
        }
        KeysCommand::IndexRotate => {
            let rotated =
                keys.rotate_index_key(RotateIndexKeyRequest { requester: requester() }).await.map_err(status)?;
            let current = rotated.into_inner().current_version;
            if json {
                emit(serde_json::json!({"current_version": current}))?;
            } else {
                emit(format_args!("blind-index key version {current} is current; run `qupiactl keys reindex`"))?;
            }
        }
        KeysCommand::Reindex { rate } => {
            let request = ReindexRequest { requester: requester(), rate_per_second: rate.unwrap_or(0) };
            let stream = keys.reindex(request).await.map_err(status)?.into_inner();
            let last = follow(stream, |m| m.progress, "people", json).await?;
            summary(&last, "people", json)?;
        }
        KeysCommand::IndexRemove { version } => {
            let request = RemoveIndexKeyRequest { requester: requester(), version };
            let removed = keys.remove_index_key(request).await.map_err(status)?.into_inner();
            if json {
                emit(serde_json::json!({"removed_version": version, "entries_deleted": removed.entries_deleted}))?;
            } else {
                emit(format_args!(
                    "blind-index key version {version} removed with its {} entries",
                    removed.entries_deleted
                ))?;
            }
        }
    }
    Ok(true)
}

fn done(json: bool, what: &str, version: u32) -> anyhow::Result<()> {
    if json {
        emit(serde_json::json!({"version": version, "state": what}))
    } else {
        emit(format_args!("kek version {version} {what}"))
    }
}
