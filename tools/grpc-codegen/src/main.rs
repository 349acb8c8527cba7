//! Writes the OIP v2 gRPC messages, client and server (tonic + prost) into the directory
//! given as the only argument.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args().nth(1).ok_or("usage: grpc-codegen <out dir>")?;
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    tonic_prost_build::configure()
        .out_dir(&out)
        .build_client(true)
        .build_server(true)
        .compile_protos(&[format!("{root}/proto/inference/grpc_predict_v2.proto")], &[format!("{root}/proto")])?;
    Ok(())
}
