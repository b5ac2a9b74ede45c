//! STUB: being written.
use anyhow::Result;

pub fn run() -> Result<()> {
    anyhow::bail!("not written yet")
}
