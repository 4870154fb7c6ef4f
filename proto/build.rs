//! Compiles `lks/agent/v1/agent.proto` with protox (pure Rust), so building needs no
//! system `protoc`.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "lks/agent/v1/agent.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["."])?;
    // No `connect` helpers: the host dials through its own tunnel, so the
    // contract needs none of tonic's transport.
    tonic_prost_build::configure()
        .build_transport(false)
        .compile_fds(fds)?;
    Ok(())
}
