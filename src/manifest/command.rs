//! `validate` and `plan`.

use crate::Exit;
use crate::cli::{PlanArgs, ValidateArgs};

pub fn validate(args: &ValidateArgs) -> anyhow::Result<Exit> {
    let _ = args;
    anyhow::bail!("`validate` is not built yet")
}

pub fn plan(args: &PlanArgs) -> anyhow::Result<Exit> {
    let _ = args;
    anyhow::bail!("`plan` is not built yet")
}
