//! Compiles `lks/agent/v1/agent.proto` with protox (pure Rust), so building needs no
//! system `protoc`.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "lks/agent/v1/agent.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["."])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
