//! `status`, `report` and `revert`.

use crate::Exit;
use crate::cli::{ReportArgs, RevertArgs, StatusArgs};

pub fn status(args: &StatusArgs) -> anyhow::Result<Exit> {
    let _ = args;
    anyhow::bail!("`status` is not built yet")
}

pub fn report(args: &ReportArgs) -> anyhow::Result<Exit> {
    let _ = args;
    anyhow::bail!("`report` is not built yet")
}

pub fn revert(args: &RevertArgs) -> anyhow::Result<Exit> {
    let _ = args;
    anyhow::bail!("`revert` is not built yet")
}
