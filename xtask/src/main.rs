//! Project automation: `cargo xtask <demo|bench|ci>`.

fn main() -> anyhow::Result<()> {
    anyhow::bail!("no tasks yet")
}
