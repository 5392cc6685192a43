use rbees_model::tokenizer::Tokenizer;

#[test]
fn scratch_compare() {
    let list = std::env::var("TOKDEV").unwrap_or_default();
    let mut total_fail = 0;
    for name in list.split(',').filter(|s| !s.is_empty()) {
        let json: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(format!("/tmp/tokdev/{name}.json")).unwrap(),
        )
        .unwrap();
        let path = json["model"].as_str().unwrap();
        let mut f = std::fs::File::open(path).unwrap();
        let mut content = candle_core::quantized::gguf_file::Content::read(&mut f).unwrap();
        if let Some(pre) = json.get("pre").and_then(|v| v.as_str()) {
            content.metadata.insert(
                "tokenizer.ggml.pre".into(),
                candle_core::quantized::gguf_file::Value::String(pre.into()),
            );
        }
        let t0 = std::time::Instant::now();
        let tok = match Tokenizer::from_gguf_metadata(&content.metadata) {
            Ok(t) => t,
            Err(e) => {
                println!("{name}: load error {e}");
                total_fail += 1;
                continue;
            }
        };
        let load = t0.elapsed();
        let mut fails = 0;
        let cases = json["cases"].as_array().unwrap();
        for c in cases {
            let text = c["text"].as_str().unwrap();
            let add = c["add_special"].as_bool().unwrap();
            let sp = c["parse_special"].as_bool().unwrap();
            let exp: Vec<u32> = c["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            let got = tok.encode(text, add, sp).unwrap();
            if got != exp {
                fails += 1;
                if fails <= 6 {
                    println!("{name} MISMATCH add={add} sp={sp} text={text:?}\n  exp={exp:?}\n  got={got:?}");
                }
            }
        }
        println!(
            "{name}: {} cases, {fails} failures, load {:?}",
            cases.len(),
            load
        );
        total_fail += fails;
    }
    assert_eq!(total_fail, 0);
}
