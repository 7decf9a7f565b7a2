/** Loaded before every test file (bunfig.toml): integration tests start brokers and runs of several seconds. */
import { setDefaultTimeout } from "bun:test";

setDefaultTimeout(60_000);
