use std::process::ExitCode;

use crate::cli::KeyslotCommand;
use crate::{hygiene, secrets};

pub fn run(cmd: KeyslotCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        KeyslotCommand::List { vault, json } => {
            let (_, locked) = super::open_locked(&vault)?;
            let slots = super::status::slot_infos(&locked);
            if json {
                println!("{}", serde_json::to_string_pretty(&slots)?);
            } else {
                for s in slots {
                    let extra = s
                        .argon2
                        .clone()
                        .or_else(|| {
                            s.authorities
                                .as_ref()
                                .map(super::status::AuthoritiesInfo::describe)
                        })
                        .map(|a| format!(" ({a})"))
                        .unwrap_or_default();
                    println!("{:>3}  {:<13} {}{}", s.id, s.kind, s.label, extra);
                }
            }
        }
        KeyslotCommand::Add {
            vault,
            new,
            unlock,
            kdf,
        } => {
            hygiene::harden()?;
            let params = super::argon2_params(&kdf)?;
            let mut opened = super::unlock(&vault, &secrets::unlocker(&unlock)?)?;
            let (secret, recovery) = secrets::new_slot_secret(&new)?;
            let id = opened.add_slot(&secret, &new.label, params)?;
            if let Some(key) = recovery {
                secrets::show_recovery_key(&key, new.recovery_key_out.as_deref(), "the vault")?;
            }
            eprintln!("atrest: added keyslot {id}");
        }
        KeyslotCommand::Remove {
            vault,
            slot,
            unlock,
        } => {
            hygiene::harden()?;
            let mut opened = super::unlock(&vault, &secrets::unlocker(&unlock)?)?;
            opened.remove_slot(slot)?;
            eprintln!("atrest: removed keyslot {slot}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
