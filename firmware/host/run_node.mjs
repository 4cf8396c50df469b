// Runs the sensor-node firmware under the MicroPython WebAssembly port: one boot of one node.
//
//   node run_node.mjs --flash DIR [--uart-fd N] [--reset-cause power|soft|wdt] [--cut JSON]
//
// DIR is the node's flash, mirrored at /flash: every write, truncation, rename and delete the
// firmware makes reaches DIR at once, so killing this process is a power cut. The UART is the
// character device /dev/uart0, joined to file descriptor N (the master side of a
// pseudo-terminal, passed in by tools/sim/node.py). hw_sim.py (beside this file) is the
// hardware layer's other half.
//
// stdout carries events, one JSON object per line: {"ev":"boot"}, {"ev":"ready"},
// {"ev":"wdt","ms":M}, {"ev":"feed"}, {"ev":"baud","baud":B}, {"ev":"reply",...}. The firmware's
// own output goes to stderr. stdin takes commands, one JSON object per line:
//   {"id":1,"cmd":"set","ch":0,"value":12.5}    channel 0 reads 12.5 (null: no answer;
//                                               "crash": a bug in the sampler; "hang": stall)
//   {"id":2,"cmd":"exec","code":"_r = 1 + 1"}   run Python, reply with the value of _r
//   {"id":3,"cmd":"cut","path":"/flash/config.new","after":10}
//                                               power cut when byte 10 of that file is written
//   {"id":4,"cmd":"cut","path":"/flash/slot.new","op":"rename"}   ... when it is renamed
//   {"id":5,"cmd":"stop"}                        exit 0
// A soft reset (machine.reset) exits with status 75; the launcher starts the next boot.

import fs from "node:fs";
import path from "node:path";
import readline from "node:readline";
import tty from "node:tty";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const { loadMicroPython } = await import(
  path.join(here, "..", "node_modules", "@micropython", "micropython-webassembly-pyscript", "micropython.mjs")
);

const EXIT_RESET = 75;
const EXIT_NOT_BOOTABLE = 3;

function args() {
  const a = { flash: null, uartFd: null, resetCause: "power", cut: null };
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--flash") a.flash = argv[++i];
    else if (argv[i] === "--uart-fd") a.uartFd = parseInt(argv[++i], 10);
    else if (argv[i] === "--reset-cause") a.resetCause = argv[++i];
    else if (argv[i] === "--cut") a.cut = JSON.parse(argv[++i]); // as the "cut" command, armed from the start
    else throw new Error(`unknown argument ${argv[i]}`);
  }
  if (!a.flash) throw new Error("--flash DIR is required");
  return a;
}

const opts = args();
const emit = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const log = (line) => process.stderr.write(line + "\n");

const mp = await loadMicroPython({ heapsize: 256 * 1024, stdout: log, stderr: log, linebuffer: true });
const FS = mp.FS;
const MEMFS = FS.filesystems.MEMFS;

// ---- flash: MEMFS at /flash, every change mirrored to the host directory ----------------------

const FLASH = "/flash";
const hostPath = (p) => path.join(opts.flash, p.slice(FLASH.length));
const onFlash = (p) => p === FLASH || p.startsWith(FLASH + "/");
let cut = null; // {path, op: "write"|"rename", after, written}
const armCut = (c) => ({ path: c.path, op: c.op || "write", after: c.after || 0, written: 0 });
if (opts.cut) cut = armCut(opts.cut);

function powerCut() {
  process.kill(process.pid, "SIGKILL");
}

function preload(dir, guest) {
  FS.mkdir(guest);
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const src = path.join(dir, e.name);
    if (e.isDirectory()) preload(src, `${guest}/${e.name}`);
    else if (e.isFile()) FS.writeFile(`${guest}/${e.name}`, fs.readFileSync(src));
  }
}

function mirror() {
  const dirOps = MEMFS.ops_table.dir.node;
  const fileOps = MEMFS.ops_table.file.node;
  const fileStream = MEMFS.ops_table.file.stream;
  const { mknod, rename, unlink, rmdir } = dirOps;
  const { setattr } = fileOps;
  const { write } = fileStream;

  dirOps.mknod = function (parent, name, mode, dev) {
    const node = mknod.call(this, parent, name, mode, dev);
    const p = FS.getPath(node);
    if (onFlash(p)) {
      if (FS.isDir(mode)) fs.mkdirSync(hostPath(p), { recursive: true });
      else if (FS.isFile(mode)) fs.writeFileSync(hostPath(p), "");
    }
    return node;
  };
  dirOps.rename = function (oldNode, newDir, newName) {
    const from = FS.getPath(oldNode);
    const to = `${FS.getPath(newDir)}/${newName}`;
    if (cut && cut.op === "rename" && cut.path === from) powerCut();
    rename.call(this, oldNode, newDir, newName);
    if (onFlash(from) && onFlash(to)) fs.renameSync(hostPath(from), hostPath(to));
  };
  dirOps.unlink = function (parent, name) {
    const p = `${FS.getPath(parent)}/${name}`;
    unlink.call(this, parent, name);
    if (onFlash(p)) fs.unlinkSync(hostPath(p));
  };
  dirOps.rmdir = function (parent, name) {
    const p = `${FS.getPath(parent)}/${name}`;
    rmdir.call(this, parent, name);
    if (onFlash(p)) fs.rmdirSync(hostPath(p));
  };
  fileOps.setattr = function (node, attr) {
    setattr.call(this, node, attr);
    const p = FS.getPath(node);
    if (attr.size !== undefined && onFlash(p)) fs.truncateSync(hostPath(p), attr.size);
  };
  fileStream.write = function (stream, buffer, offset, length, position, canOwn) {
    const p = FS.getPath(stream.node);
    if (!onFlash(p)) return write.call(this, stream, buffer, offset, length, position, canOwn);
    let n = length;
    let die = false;
    if (cut && cut.op === "write" && cut.path === p) {
      const left = cut.after - cut.written;
      if (length >= left) [n, die] = [Math.max(left, 0), true];
      else cut.written += length;
    }
    const done = n > 0 ? write.call(this, stream, buffer, offset, n, position, false) : 0;
    if (n > 0) {
      const fd = fs.openSync(hostPath(p), "r+");
      try {
        fs.writeSync(fd, Buffer.from(buffer.buffer, buffer.byteOffset + offset, n), 0, n, position);
      } finally {
        fs.closeSync(fd);
      }
    }
    if (die) powerCut();
    return done;
  };
}

fs.mkdirSync(opts.flash, { recursive: true });
preload(opts.flash, FLASH);
mirror();
FS.mkdir("/sim");
FS.writeFile("/sim/hw_sim.py", fs.readFileSync(path.join(here, "hw_sim.py")));

// ---- UART: /dev/uart0 <-> the pseudo-terminal ------------------------------------------------

const rx = [];
let rxLen = 0;
const uart = FS.makedev(64, 0);
FS.registerDevice(uart, {
  open() {},
  close() {},
  read(stream, buffer, offset, length) {
    let n = 0;
    while (n < length && rx.length) {
      const chunk = rx[0];
      const k = Math.min(chunk.length, length - n);
      for (let i = 0; i < k; i++) buffer[offset + n + i] = chunk[i];
      n += k;
      if (k === chunk.length) rx.shift();
      else rx[0] = chunk.subarray(k);
    }
    rxLen -= n;
    return n;
  },
  write(stream, buffer, offset, length) {
    if (opts.uartFd !== null) {
      fs.writeSync(opts.uartFd, Buffer.from(buffer.buffer, buffer.byteOffset + offset, length));
    }
    return length;
  },
});
FS.mkdev("/dev/uart0", uart);

// A tty stream, not fs.read: a read blocked in the thread pool would stall process.exit().
if (opts.uartFd !== null) {
  const line = new tty.ReadStream(opts.uartFd);
  line.on("data", (chunk) => {
    rx.push(chunk);
    rxLen += chunk.length;
  });
  line.on("error", () => {}); // EIO while no one holds the terminal's other end
}

// ---- cimhost: what hw_sim.py calls ------------------------------------------------------------

const values = {};
mp.registerJsModule("cimhost", {
  uart_any: () => rxLen,
  uart_baud: (baud) => emit({ ev: "baud", baud }),
  channel: (i) => (i in values ? values[i] : 0),
  wdt_start: (ms) => emit({ ev: "wdt", ms }),
  wdt_feed: () => emit({ ev: "feed" }),
  reset_cause: () => opts.resetCause,
  reset: () => {
    emit({ ev: "reset" });
    process.exit(EXIT_RESET);
  },
  ready: () => emit({ ev: "ready" }),
});

// ---- control ----------------------------------------------------------------------------------

function command(c) {
  switch (c.cmd) {
    case "set":
      values[c.ch] = c.value;
      return null;
    case "exec": {
      mp.runPython(c.code);
      const r = mp.globals.get("_r");
      return r === undefined ? null : mp.PyProxy.toJs(r);
    }
    case "cut":
      cut = armCut(c);
      return null;
    case "stop":
      process.exit(0);
    default:
      throw new Error(`unknown command ${c.cmd}`);
  }
}

const control = readline.createInterface({ input: process.stdin });
control.on("close", () => process.exit(0)); // the launcher is gone: so is the node
control.on("line", (line) => {
  let c = {};
  try {
    c = JSON.parse(line);
    emit({ ev: "reply", id: c.id, ok: true, value: command(c) });
  } catch (e) {
    emit({ ev: "reply", id: c.id, ok: false, error: e.type ? `${e.type}: ${e.message}` : String(e) });
  }
});

// ---- boot -------------------------------------------------------------------------------------

emit({ ev: "boot", cause: opts.resetCause });
try {
  mp.runPython('import sys\nsys.path.insert(0, "/sim")\nsys.path.insert(0, "/flash")\nimport main\n');
} catch (e) {
  log(`boot failed: ${e.message}`);
  emit({ ev: "dead", error: e.message });
  process.exit(EXIT_NOT_BOOTABLE);
}
