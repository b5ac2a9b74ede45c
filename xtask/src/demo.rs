//! STUB: being written.
use anyhow::Result;

#[derive(clap::Args)]
pub struct DemoArgs {}

pub fn run(_args: &DemoArgs) -> Result<()> {
    anyhow::bail!("not written yet")
}
