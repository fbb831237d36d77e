//! Compiles `xmppd/v1/*.proto` with protox, a pure-Rust protobuf compiler, so
//! that building needs no `protoc` on the machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["xmppd/v1/cluster.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["."])?;
    tonic_prost_build::configure()
        .bytes(".xmppd.v1.Envelope.payload")
        .bytes(".xmppd.v1.BoundResource.presence")
        .compile_fds(descriptors)?;
    Ok(())
}
