/**
 * Classification metrics on class-index arrays. Undefined ratios (a class never predicted,
 * or absent from the truth) count as 0, like scikit-learn's zero_division=0; macro-F1
 * averages over every class of the label list, so a class the model never gets right
 * pulls the average down instead of disappearing from it.
 */

export interface ClassScores { label: string; precision: number; recall: number; f1: number; support: number }

export interface ClassificationReport {
  /** rows = true class, columns = predicted class */
  confusion: number[][];
  perClass: ClassScores[];
  macroF1: number;
  accuracy: number;
}

function checkLengths(truth: Int32Array, predicted: Int32Array): void {
  if (truth.length !== predicted.length) throw new RangeError(`${truth.length} true labels but ${predicted.length} predictions`);
}

export function confusionMatrix(truth: Int32Array, predicted: Int32Array, classes: number): number[][] {
  checkLengths(truth, predicted);
  const matrix = Array.from({ length: classes }, () => new Array<number>(classes).fill(0));
  truth.forEach((t, i) => {
    const p = predicted[i];
    if (t < 0 || t >= classes || p < 0 || p >= classes) throw new RangeError(`class index outside 0..${classes - 1} at row ${i}`);
    matrix[t][p]++;
  });
  return matrix;
}

const ratio = (numerator: number, denominator: number) => (denominator ? numerator / denominator : 0);

/** Precision, recall, F1 and support of each class, from a confusion matrix. */
export function perClassScores(confusion: number[][], labels: readonly string[]): ClassScores[] {
  return labels.map((label, c) => {
    const hits = confusion[c][c];
    const support = confusion[c].reduce((a, b) => a + b, 0);
    const predictedAs = confusion.reduce((sum, row) => sum + row[c], 0);
    const precision = ratio(hits, predictedAs);
    const recall = ratio(hits, support);
    return { label, precision, recall, f1: ratio(2 * precision * recall, precision + recall), support };
  });
}

export function macroF1(perClass: readonly ClassScores[]): number {
  return ratio(perClass.reduce((sum, c) => sum + c.f1, 0), perClass.length);
}

export function accuracy(truth: Int32Array, predicted: Int32Array): number {
  checkLengths(truth, predicted);
  let hits = 0;
  truth.forEach((t, i) => { if (t === predicted[i]) hits++; });
  return ratio(hits, truth.length);
}

export function classificationReport(truth: Int32Array, predicted: Int32Array, labels: readonly string[]): ClassificationReport {
  const confusion = confusionMatrix(truth, predicted, labels.length);
  const perClass = perClassScores(confusion, labels);
  return { confusion, perClass, macroF1: macroF1(perClass), accuracy: accuracy(truth, predicted) };
}
