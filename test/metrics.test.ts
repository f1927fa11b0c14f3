import test from 'ava';
import { accuracy, classificationReport, confusionMatrix, macroF1, perClassScores } from '../stages/sweep/metrics.js';

const truth = Int32Array.from([0, 0, 0, 1, 1, 2]);
const predicted = Int32Array.from([0, 0, 1, 1, 2, 1]);

test('confusion matrix: rows are true classes, columns predicted', (t) => {
  t.deepEqual(confusionMatrix(truth, predicted, 3), [[2, 1, 0], [0, 1, 1], [0, 1, 0]]);
});

test('per-class precision, recall, F1 and support', (t) => {
  const [a, b, c] = perClassScores(confusionMatrix(truth, predicted, 3), ['a', 'b', 'c']);
  t.deepEqual(a, { label: 'a', precision: 1, recall: 2 / 3, f1: 0.8, support: 3 });
  t.is(b.precision, 1 / 3);
  t.is(b.recall, 1 / 2);
  t.true(Math.abs(b.f1 - 0.4) < 1e-12);
  t.deepEqual(c, { label: 'c', precision: 0, recall: 0, f1: 0, support: 1 }, 'a class never predicted right scores 0, not NaN');
});

test('macro-F1 averages every class, accuracy counts hits', (t) => {
  const report = classificationReport(truth, predicted, ['a', 'b', 'c']);
  t.true(Math.abs(report.macroF1 - (0.8 + 0.4 + 0) / 3) < 1e-12);
  t.is(macroF1(report.perClass), report.macroF1);
  t.is(report.accuracy, 3 / 6);
  t.is(accuracy(truth, truth), 1);
});

test('a class absent from both truth and predictions has zero scores', (t) => {
  const report = classificationReport(Int32Array.from([0, 1]), Int32Array.from([0, 1]), ['a', 'b', 'c']);
  t.deepEqual(report.perClass[2], { label: 'c', precision: 0, recall: 0, f1: 0, support: 0 });
  t.true(Math.abs(report.macroF1 - 2 / 3) < 1e-12);
});

test('mismatched lengths and out-of-range classes are rejected', (t) => {
  t.throws(() => accuracy(Int32Array.from([0]), Int32Array.from([0, 1])), { instanceOf: RangeError });
  t.throws(() => confusionMatrix(Int32Array.from([3]), Int32Array.from([0]), 3), { instanceOf: RangeError });
});
