//! Running `CREATE`/`ALTER`/`DROP USER` (parsed in [`crate::users`]) and who may.

use super::*;
use crate::error::{Error, Result};
use crate::users::{Role, UserCommand};

/// Runs a user-management statement against `users` (blocking: it hashes and syncs).
pub(super) fn run_user_command(
    users: &crate::users::Users,
    cmd: &UserCommand,
) -> Result<CommandTag> {
    let verifier = |p: &Option<String>| p.as_deref().map(crate::scram::verifier_for).transpose();
    Ok(match cmd {
        UserCommand::Create {
            name,
            if_not_exists,
            role,
            password,
        } => {
            let verifier = match password {
                Some(p) => verifier(p)?,
                None => None,
            };
            users.create_user(
                name,
                role.unwrap_or(Role::Readwrite),
                verifier,
                *if_not_exists,
            )?;
            CommandTag::plain("CREATE ROLE")
        }
        UserCommand::Alter {
            name,
            role,
            password,
        } => {
            let verifier = match password {
                Some(p) => Some(verifier(p)?),
                None => None,
            };
            users.alter_user(name, *role, verifier)?;
            CommandTag::plain("ALTER ROLE")
        }
        UserCommand::Drop { names, if_exists } => {
            for name in names {
                users.drop_user(name, *if_exists)?;
            }
            CommandTag::plain("DROP ROLE")
        }
    })
}

impl Session {
    /// Runs a user-management statement. Deriving a verifier (4096 PBKDF2 rounds) and
    /// the synced write run on the blocking pool, not on the caller's async worker.
    pub(super) async fn run_user_command(&self, cmd: &UserCommand) -> Result<CommandTag> {
        if let UserCommand::Drop { names, .. } = cmd
            && names.iter().any(|n| *n == self.user_name())
        {
            return Err(Error::InvalidState("current user cannot be dropped".into()));
        }
        let users = self.db.users().clone();
        let cmd = cmd.clone();
        self.db
            .executor()
            .run_blocking(move || run_user_command(&users, &cmd))
            .await
    }

    /// Superusers manage users; anyone may change their own password.
    pub(super) fn authorize_user_command(&self, cmd: &UserCommand) -> Result<()> {
        if self.role() == Role::Superuser {
            return Ok(());
        }
        if let UserCommand::Alter {
            name,
            role: None,
            password: Some(_),
        } = cmd
            && *name == self.user_name()
        {
            return Ok(());
        }
        Err(Error::PermissionDenied(format!(
            "permission denied: only a superuser can manage users (\"{}\" is {})",
            self.user_name(),
            self.role()
        )))
    }
}
