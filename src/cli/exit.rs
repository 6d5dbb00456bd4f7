//! The exit-code table (docs/cli.md). Codes are stable and never reused.

use crate::backup::BackupError;
use crate::repo::RepoError;
use crate::restore::RestoreError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitCode {
    Ok = 0,
    Error = 1,
    /// The command line was wrong (clap's own code).
    Usage = 2,
    /// Backup finished, but some files could not be read; the snapshot is marked partial.
    Partial = 3,
    /// `drill` found damage.
    DrillDamage = 4,
    /// `drill` passed its checks, but an objective (RTO, RPO) was breached.
    ObjectiveBreached = 5,
    RepoNotFound = 10,
    LockFailed = 11,
    WrongPassword = 12,
    /// Refused: a snapshot it would remove is under a legal hold or the minimum retention.
    Protected = 13,
    Interrupted = 130,
    /// Standard output was closed by its reader (`coffer ls | head`): quietly, as SIGPIPE.
    BrokenPipe = 141,
}

fn repo_code(e: &RepoError) -> ExitCode {
    match e {
        RepoError::NotFound(_) | RepoError::LocationMissing(_) => ExitCode::RepoNotFound,
        RepoError::WrongPassword => ExitCode::WrongPassword,
        RepoError::Locked(_) => ExitCode::LockFailed,
        RepoError::Protected(_) => ExitCode::Protected,
        _ => ExitCode::Error,
    }
}

/// Maps an error (from any layer) to its exit code.
pub fn exit_code_for(err: &anyhow::Error) -> ExitCode {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<RepoError>() {
            return repo_code(e);
        }
        if let Some(BackupError::Repo(e)) = cause.downcast_ref::<BackupError>() {
            return repo_code(e);
        }
        if let Some(RestoreError::Repo(e)) = cause.downcast_ref::<RestoreError>() {
            return repo_code(e);
        }
    }
    ExitCode::Error
}
