/**
 * The sweep trainer's WebAssembly SIMD kernels in WebAssembly text. scripts/assemble-kernels.ts
 * assembles this at build time into dist/stages/sweep/kernels.wasm, which simd.ts loads;
 * simd.ts also gives each kernel a typed wrapper with named arguments.
 *
 * Why not tfjs ops: a training step of one head is a [32,1280]x[1280,6] product, and tfjs
 * spends more on dispatching each op (tens of microseconds) than on its arithmetic; plain
 * JavaScript loops reach ~0.3 Gelem/s. These kernels run the same math in 128-bit SIMD
 * directly on one WebAssembly memory, with no allocation per step.
 *
 * All pointers and lengths are byte offsets into the memory; every matrix is row-major
 * float32 and every reduction length must be a multiple of 8 floats (checked by callers).
 * Each output is reduced in one fixed order (two f32x4 accumulators over alternate 4-float
 * blocks, then (lane 0 + lane 1) + (lane 2 + lane 3)), so a result does not depend on what
 * else shares the memory or on how outputs are grouped. dense and outer compute three
 * outputs per pass over their shared operand: that halves the loads and keeps six
 * independent add chains in flight instead of two (one chain waits on add latency).
 */

/** The lines `line(u)` for each unit u of a three-unit group. */
const forEachOfThree = (line: (u: number) => string) => [0, 1, 2].map(line).join('\n');

export const KERNELS_WAT = String.raw`
(module
  (memory (import "env" "memory") 1)

  ;; (lane 0 + lane 1) + (lane 2 + lane 3) of a + b
  (func $sum (param $a v128) (param $b v128) (result f32)
    (local $s v128)
    (local.set $s (f32x4.add (local.get $a) (local.get $b)))
    (f32.add
      (f32.add (f32x4.extract_lane 0 (local.get $s)) (f32x4.extract_lane 1 (local.get $s)))
      (f32.add (f32x4.extract_lane 2 (local.get $s)) (f32x4.extract_lane 3 (local.get $s)))))

  ;; mask(x, end, random, threshold, scale): inverted dropout in place on floats [x, end).
  ;; Each float has its own uint16 in random; it is kept (and scaled) iff random >= threshold.
  (func (export "mask") (param $x i32) (param $end i32) (param $random i32) (param $threshold i32) (param $scale f32)
    (local $keep v128) (local $vThreshold v128) (local $vScale v128)
    (local.set $vThreshold (i16x8.splat (local.get $threshold)))
    (local.set $vScale (f32x4.splat (local.get $scale)))
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $x) (local.get $end)))
      (local.set $keep (i16x8.ge_u (v128.load (local.get $random)) (local.get $vThreshold)))
      ;; sign-extending an all-ones 16-bit lane gives an all-ones 32-bit lane: a float mask
      (v128.store offset=0 (local.get $x) (f32x4.mul
        (v128.and (v128.load offset=0 (local.get $x)) (i32x4.extend_low_i16x8_s (local.get $keep)))
        (local.get $vScale)))
      (v128.store offset=16 (local.get $x) (f32x4.mul
        (v128.and (v128.load offset=16 (local.get $x)) (i32x4.extend_high_i16x8_s (local.get $keep)))
        (local.get $vScale)))
      (local.set $random (i32.add (local.get $random) (i32.const 16)))
      (local.set $x (i32.add (local.get $x) (i32.const 32)))
      (br $next))))

  ;; gather(out, x, rows, count, rowBytes): out[i, :] = x[rows[i], :] for i < count (rows: int32)
  (func (export "gather") (param $out i32) (param $x i32) (param $rows i32) (param $count i32) (param $rowBytes i32)
    (local $end i32)
    (local.set $end (i32.add (local.get $rows) (i32.shl (local.get $count) (i32.const 2))))
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $rows) (local.get $end)))
      (memory.copy (local.get $out)
        (i32.add (local.get $x) (i32.mul (i32.load (local.get $rows)) (local.get $rowBytes)))
        (local.get $rowBytes))
      (local.set $out (i32.add (local.get $out) (local.get $rowBytes)))
      (local.set $rows (i32.add (local.get $rows) (i32.const 4)))
      (br $next))))

  ;; out[u] = bias[u] + x . w[u, :] for u = 0, 1, 2 (rows of w: inBytes apart)
  (func $dot3 (param $out i32) (param $x i32) (param $w i32) (param $bias i32) (param $inBytes i32)
    (local $end i32) (local $x0 v128) (local $x1 v128)
    ${forEachOfThree((u) => `(local $w${u} i32) (local $a${u}0 v128) (local $a${u}1 v128)`)}
    (local.set $end (i32.add (local.get $x) (local.get $inBytes)))
    (local.set $w0 (local.get $w))
    (local.set $w1 (i32.add (local.get $w0) (local.get $inBytes)))
    (local.set $w2 (i32.add (local.get $w1) (local.get $inBytes)))
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $x) (local.get $end)))
      (local.set $x0 (v128.load offset=0 (local.get $x)))
      (local.set $x1 (v128.load offset=16 (local.get $x)))
      ${forEachOfThree((u) => `
      (local.set $a${u}0 (f32x4.add (local.get $a${u}0) (f32x4.mul (local.get $x0) (v128.load offset=0 (local.get $w${u})))))
      (local.set $a${u}1 (f32x4.add (local.get $a${u}1) (f32x4.mul (local.get $x1) (v128.load offset=16 (local.get $w${u})))))
      (local.set $w${u} (i32.add (local.get $w${u}) (i32.const 32)))`)}
      (local.set $x (i32.add (local.get $x) (i32.const 32)))
      (br $next)))
    ${forEachOfThree((u) => `(f32.store offset=${4 * u} (local.get $out)
      (f32.add (call $sum (local.get $a${u}0) (local.get $a${u}1)) (f32.load offset=${4 * u} (local.get $bias))))`)})

  ;; out[0] = bias[0] + x . w[0, :]
  (func $dot1 (param $out i32) (param $x i32) (param $w i32) (param $bias i32) (param $inBytes i32)
    (local $end i32) (local $a0 v128) (local $a1 v128)
    (local.set $end (i32.add (local.get $x) (local.get $inBytes)))
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $x) (local.get $end)))
      (local.set $a0 (f32x4.add (local.get $a0) (f32x4.mul (v128.load offset=0 (local.get $x)) (v128.load offset=0 (local.get $w)))))
      (local.set $a1 (f32x4.add (local.get $a1) (f32x4.mul (v128.load offset=16 (local.get $x)) (v128.load offset=16 (local.get $w)))))
      (local.set $w (i32.add (local.get $w) (i32.const 32)))
      (local.set $x (i32.add (local.get $x) (i32.const 32)))
      (br $next)))
    (f32.store (local.get $out) (f32.add (call $sum (local.get $a0) (local.get $a1)) (f32.load (local.get $bias)))))

  ;; dense(out, x, w, bias, rows, inBytes, outBytes): out[r, u] = bias[u] + x[r, :] . w[u, :]
  (func (export "dense") (param $out i32) (param $x i32) (param $w i32) (param $bias i32) (param $rows i32)
      (param $inBytes i32) (param $outBytes i32)
    (local $xEnd i32) (local $u i32) (local $groupsEnd i32)
    (local.set $xEnd (i32.add (local.get $x) (i32.mul (local.get $rows) (local.get $inBytes))))
    ;; units [0, groupsEnd) (u in bytes) go three at a time, the rest one by one
    (local.set $groupsEnd (i32.sub (local.get $outBytes) (i32.rem_u (local.get $outBytes) (i32.const 12))))
    (block $rowsDone (loop $nextRow
      (br_if $rowsDone (i32.ge_u (local.get $x) (local.get $xEnd)))
      (local.set $u (i32.const 0))
      (block $unitsDone (loop $nextUnits
        (br_if $unitsDone (i32.ge_u (local.get $u) (local.get $outBytes)))
        (if (i32.lt_u (local.get $u) (local.get $groupsEnd))
          (then
            (call $dot3 (i32.add (local.get $out) (local.get $u)) (local.get $x)
              (i32.add (local.get $w) (i32.mul (local.get $u) (i32.shr_u (local.get $inBytes) (i32.const 2))))
              (i32.add (local.get $bias) (local.get $u)) (local.get $inBytes))
            (local.set $u (i32.add (local.get $u) (i32.const 12))))
          (else
            (call $dot1 (i32.add (local.get $out) (local.get $u)) (local.get $x)
              (i32.add (local.get $w) (i32.mul (local.get $u) (i32.shr_u (local.get $inBytes) (i32.const 2))))
              (i32.add (local.get $bias) (local.get $u)) (local.get $inBytes))
            (local.set $u (i32.add (local.get $u) (i32.const 4)))))
        (br $nextUnits)))
      (local.set $out (i32.add (local.get $out) (local.get $outBytes)))
      (local.set $x (i32.add (local.get $x) (local.get $inBytes)))
      (br $nextRow))))

  ;; g[u, :] = sum_i d[u * dOuterStep + i * dStep] * x[i * xStep, :] for u = 0, 1, 2
  ;; (rows of g: innerBytes apart, i < count)
  (func $outer3 (param $g i32) (param $d i32) (param $x i32) (param $count i32) (param $dStep i32) (param $xStep i32)
      (param $innerBytes i32) (param $dOuterStep i32)
    (local $blockEnd i32) (local $p i32) (local $dp i32) (local $dpEnd i32) (local $x0 v128) (local $x1 v128)
    ${forEachOfThree((u) => `(local $d${u} i32) (local $g${u} i32) (local $v${u} v128) (local $a${u}0 v128) (local $a${u}1 v128)`)}
    ${forEachOfThree((u) => `(local.set $d${u} (i32.mul (local.get $dOuterStep) (i32.const ${u})))
    (local.set $g${u} (i32.add (local.get $g) (i32.mul (local.get $innerBytes) (i32.const ${u}))))`)}
    (local.set $blockEnd (i32.add (local.get $x) (local.get $innerBytes)))
    (local.set $dpEnd (i32.add (local.get $d) (i32.mul (local.get $count) (local.get $dStep))))
    (block $blocksDone (loop $nextBlock
      (br_if $blocksDone (i32.ge_u (local.get $x) (local.get $blockEnd)))
      ${forEachOfThree((u) => `(local.set $a${u}0 (v128.const i32x4 0 0 0 0)) (local.set $a${u}1 (v128.const i32x4 0 0 0 0))`)}
      (local.set $p (local.get $x))
      (local.set $dp (local.get $d))
      (block $done (loop $next
        (br_if $done (i32.ge_u (local.get $dp) (local.get $dpEnd)))
        (local.set $x0 (v128.load offset=0 (local.get $p)))
        (local.set $x1 (v128.load offset=16 (local.get $p)))
        ${forEachOfThree((u) => `
        (local.set $v${u} (f32x4.splat (f32.load (i32.add (local.get $dp) (local.get $d${u})))))
        (local.set $a${u}0 (f32x4.add (local.get $a${u}0) (f32x4.mul (local.get $v${u}) (local.get $x0))))
        (local.set $a${u}1 (f32x4.add (local.get $a${u}1) (f32x4.mul (local.get $v${u}) (local.get $x1))))`)}
        (local.set $p (i32.add (local.get $p) (local.get $xStep)))
        (local.set $dp (i32.add (local.get $dp) (local.get $dStep)))
        (br $next)))
      ${forEachOfThree((u) => `(v128.store offset=0 (local.get $g${u}) (local.get $a${u}0))
      (v128.store offset=16 (local.get $g${u}) (local.get $a${u}1))
      (local.set $g${u} (i32.add (local.get $g${u}) (i32.const 32)))`)}
      (local.set $x (i32.add (local.get $x) (i32.const 32)))
      (br $nextBlock))))

  ;; g[0, :] = sum_i d[i * dStep] * x[i * xStep, :] for i < count
  (func $outer1 (param $g i32) (param $d i32) (param $x i32) (param $count i32) (param $dStep i32) (param $xStep i32)
      (param $innerBytes i32)
    (local $blockEnd i32) (local $p i32) (local $dp i32) (local $dpEnd i32) (local $v v128) (local $a0 v128) (local $a1 v128)
    (local.set $blockEnd (i32.add (local.get $x) (local.get $innerBytes)))
    (local.set $dpEnd (i32.add (local.get $d) (i32.mul (local.get $count) (local.get $dStep))))
    (block $blocksDone (loop $nextBlock
      (br_if $blocksDone (i32.ge_u (local.get $x) (local.get $blockEnd)))
      (local.set $a0 (v128.const i32x4 0 0 0 0))
      (local.set $a1 (v128.const i32x4 0 0 0 0))
      (local.set $p (local.get $x))
      (local.set $dp (local.get $d))
      (block $done (loop $next
        (br_if $done (i32.ge_u (local.get $dp) (local.get $dpEnd)))
        (local.set $v (f32x4.splat (f32.load (local.get $dp))))
        (local.set $a0 (f32x4.add (local.get $a0) (f32x4.mul (local.get $v) (v128.load offset=0 (local.get $p)))))
        (local.set $a1 (f32x4.add (local.get $a1) (f32x4.mul (local.get $v) (v128.load offset=16 (local.get $p)))))
        (local.set $p (i32.add (local.get $p) (local.get $xStep)))
        (local.set $dp (i32.add (local.get $dp) (local.get $dStep)))
        (br $next)))
      (v128.store offset=0 (local.get $g) (local.get $a0))
      (v128.store offset=16 (local.get $g) (local.get $a1))
      (local.set $g (i32.add (local.get $g) (i32.const 32)))
      (local.set $x (i32.add (local.get $x) (i32.const 32)))
      (br $nextBlock))))

  ;; outer(g, d, x, count, dStep, xStep, outerBytes, innerBytes, dOuterStep): for each of the
  ;; outer rows o (d advancing by dOuterStep over outerBytes), g[o, :] = sum_i d[o][i * dStep] * x[i * xStep, :].
  ;; With d = dOut (dStep = a row) and x = input rows it is the kernel gradient dW[u, :] = sum_r dOut[r, u] x[r, :];
  ;; with d = dOut rows (dStep = 4) and x = W it is the input gradient dX[r, :] = sum_u dOut[r, u] W[u, :].
  (func (export "outer") (param $g i32) (param $d i32) (param $x i32) (param $count i32) (param $dStep i32)
      (param $xStep i32) (param $outerBytes i32) (param $innerBytes i32) (param $dOuterStep i32)
    (local $dEnd i32) (local $groupBytes i32)
    (local.set $dEnd (i32.add (local.get $d) (local.get $outerBytes)))
    (local.set $groupBytes (i32.mul (local.get $dOuterStep) (i32.const 3)))
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $d) (local.get $dEnd)))
      (if (i32.le_u (i32.add (local.get $d) (local.get $groupBytes)) (local.get $dEnd))
        (then
          (call $outer3 (local.get $g) (local.get $d) (local.get $x) (local.get $count) (local.get $dStep)
            (local.get $xStep) (local.get $innerBytes) (local.get $dOuterStep))
          (local.set $g (i32.add (local.get $g) (i32.mul (local.get $innerBytes) (i32.const 3))))
          (local.set $d (i32.add (local.get $d) (local.get $groupBytes))))
        (else
          (call $outer1 (local.get $g) (local.get $d) (local.get $x) (local.get $count) (local.get $dStep)
            (local.get $xStep) (local.get $innerBytes))
          (local.set $g (i32.add (local.get $g) (local.get $innerBytes)))
          (local.set $d (i32.add (local.get $d) (local.get $dOuterStep)))))
      (br $next))))

  ;; The optimizer updates below run over a whole parameter block [w, end), written op for op
  ;; like tfjs' optimizers so that the reference trainer agrees. L2 regularization is in the
  ;; loss; its gradient l2 * w is added to g before the update.

  ;; adam(w, end, g, m, v, -lr, beta1, 1-beta1, beta2, 1-beta2, 1-beta1^t, 1-beta2^t, eps, l2):
  ;; m = m*b1 + g*(1-b1); v = v*b2 + g^2*(1-b2); w = (m/(1-b1^t)) / (sqrt(v/(1-b2^t)) + eps) * -lr + w
  (func (export "adam") (param $w i32) (param $end i32) (param $g i32) (param $m i32) (param $v i32)
      (param $negLr f32) (param $b1 f32) (param $c1 f32) (param $b2 f32) (param $c2 f32)
      (param $bias1 f32) (param $bias2 f32) (param $eps f32) (param $l2 f32)
    (local $vNegLr v128) (local $vB1 v128) (local $vC1 v128) (local $vB2 v128) (local $vC2 v128)
    (local $vBias1 v128) (local $vBias2 v128) (local $vEps v128) (local $vL2 v128)
    (local $grad v128) (local $mNew v128) (local $vNew v128)
    (local.set $vNegLr (f32x4.splat (local.get $negLr)))
    (local.set $vB1 (f32x4.splat (local.get $b1)))
    (local.set $vC1 (f32x4.splat (local.get $c1)))
    (local.set $vB2 (f32x4.splat (local.get $b2)))
    (local.set $vC2 (f32x4.splat (local.get $c2)))
    (local.set $vBias1 (f32x4.splat (local.get $bias1)))
    (local.set $vBias2 (f32x4.splat (local.get $bias2)))
    (local.set $vEps (f32x4.splat (local.get $eps)))
    (local.set $vL2 (f32x4.splat (local.get $l2)))
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $w) (local.get $end)))
      (local.set $grad (f32x4.add (v128.load (local.get $g)) (f32x4.mul (v128.load (local.get $w)) (local.get $vL2))))
      (local.set $mNew (f32x4.add
        (f32x4.mul (v128.load (local.get $m)) (local.get $vB1))
        (f32x4.mul (local.get $grad) (local.get $vC1))))
      (local.set $vNew (f32x4.add
        (f32x4.mul (v128.load (local.get $v)) (local.get $vB2))
        (f32x4.mul (f32x4.mul (local.get $grad) (local.get $grad)) (local.get $vC2))))
      (v128.store (local.get $m) (local.get $mNew))
      (v128.store (local.get $v) (local.get $vNew))
      (v128.store (local.get $w) (f32x4.add
        (f32x4.mul
          (f32x4.div
            (f32x4.div (local.get $mNew) (local.get $vBias1))
            (f32x4.add (f32x4.sqrt (f32x4.div (local.get $vNew) (local.get $vBias2))) (local.get $vEps)))
          (local.get $vNegLr))
        (v128.load (local.get $w))))
      (local.set $w (i32.add (local.get $w) (i32.const 16)))
      (local.set $g (i32.add (local.get $g) (i32.const 16)))
      (local.set $m (i32.add (local.get $m) (i32.const 16)))
      (local.set $v (i32.add (local.get $v) (i32.const 16)))
      (br $next))))

  ;; sgd(w, end, g, -lr, l2): w = -lr * g + w
  (func (export "sgd") (param $w i32) (param $end i32) (param $g i32) (param $negLr f32) (param $l2 f32)
    (local $vNegLr v128) (local $vL2 v128) (local $grad v128)
    (local.set $vNegLr (f32x4.splat (local.get $negLr)))
    (local.set $vL2 (f32x4.splat (local.get $l2)))
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $w) (local.get $end)))
      (local.set $grad (f32x4.add (v128.load (local.get $g)) (f32x4.mul (v128.load (local.get $w)) (local.get $vL2))))
      (v128.store (local.get $w) (f32x4.add (f32x4.mul (local.get $vNegLr) (local.get $grad)) (v128.load (local.get $w))))
      (local.set $w (i32.add (local.get $w) (i32.const 16)))
      (local.set $g (i32.add (local.get $g) (i32.const 16)))
      (br $next))))

  ;; rmsprop(w, end, g, ms, lr, rho, 1-rho, eps, l2): ms = ms*rho + g^2*(1-rho); w = w - g*lr / sqrt(ms + eps)
  (func (export "rmsprop") (param $w i32) (param $end i32) (param $g i32) (param $ms i32)
      (param $lr f32) (param $rho f32) (param $c f32) (param $eps f32) (param $l2 f32)
    (local $vLr v128) (local $vRho v128) (local $vC v128) (local $vEps v128) (local $vL2 v128)
    (local $grad v128) (local $msNew v128)
    (local.set $vLr (f32x4.splat (local.get $lr)))
    (local.set $vRho (f32x4.splat (local.get $rho)))
    (local.set $vC (f32x4.splat (local.get $c)))
    (local.set $vEps (f32x4.splat (local.get $eps)))
    (local.set $vL2 (f32x4.splat (local.get $l2)))
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $w) (local.get $end)))
      (local.set $grad (f32x4.add (v128.load (local.get $g)) (f32x4.mul (v128.load (local.get $w)) (local.get $vL2))))
      (local.set $msNew (f32x4.add
        (f32x4.mul (v128.load (local.get $ms)) (local.get $vRho))
        (f32x4.mul (f32x4.mul (local.get $grad) (local.get $grad)) (local.get $vC))))
      (v128.store (local.get $ms) (local.get $msNew))
      (v128.store (local.get $w) (f32x4.sub
        (v128.load (local.get $w))
        (f32x4.div
          (f32x4.mul (local.get $grad) (local.get $vLr))
          (f32x4.sqrt (f32x4.add (local.get $msNew) (local.get $vEps))))))
      (local.set $w (i32.add (local.get $w) (i32.const 16)))
      (local.set $g (i32.add (local.get $g) (i32.const 16)))
      (local.set $ms (i32.add (local.get $ms) (i32.const 16)))
      (br $next))))
)
`;
