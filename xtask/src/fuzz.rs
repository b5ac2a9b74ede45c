//! STUB: being written.
use anyhow::Result;

#[derive(clap::Args)]
pub struct FuzzArgs {}

pub fn run(_args: &FuzzArgs) -> Result<()> {
    anyhow::bail!("not written yet")
}
