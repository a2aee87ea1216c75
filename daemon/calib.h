/*
 * Calibration and thresholds, from out-of-fold decision values: Platt's
 * sigmoid turns a decision value into a probability-like score, and each
 * theme's threshold is the cut with the best F1 on those scores.
 */
#ifndef TD_CALIB_H
#define TD_CALIB_H

#include <stddef.h>

/* Platt's sigmoid fit (Lin, Lin & Weng 2007): p = 1/(1+exp(A f + B)).
 * label[i] > 0 marks the positives. */
void td_calib_platt_fit(const double *dec, const int *label, size_t n, double *A, double *B);

/* 1/(1+exp(A dec + B)), without overflow on either side. */
double td_calib_platt_score(double A, double B, double dec);

/* Scratch for td_calib_best_f1: n entries, the caller's (reused per theme). */
typedef struct td_calib_scored {
  double s;
  size_t i;
} td_calib_scored_t;

/* Best F1 over all cut points between distinct scores s (labels lab, > 0
 * positive); *thr (if not NULL) is the midpoint of that cut: tag when
 * s >= thr. */
double td_calib_best_f1(const double *s, const int *lab, size_t n, td_calib_scored_t *tmp,
                        double *thr);

#endif
