//! `wirechat demo`: placeholder replaced below.
pub async fn run() -> anyhow::Result<()> {
    Ok(())
}
