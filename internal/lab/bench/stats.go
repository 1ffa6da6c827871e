package bench

import (
	"math"
	"slices"
	"time"
)

// Percentile returns the p-quantile (0 <= p <= 1) of sorted, by the
// nearest-rank method, or 0 for an empty slice.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// Spread is the median and range of one figure over the rounds of a run.
type Spread struct {
	// Median is the middle value (the mean of the two middle values for an
	// even count).
	Median float64
	// Min and Max bound the values.
	Min, Max float64
	// N is the number of values.
	N int
}

// Summarize returns the spread of vs; NaN values are ignored.
func Summarize(vs []float64) Spread {
	s := make([]float64, 0, len(vs))
	for _, v := range vs {
		if !math.IsNaN(v) {
			s = append(s, v)
		}
	}
	if len(s) == 0 {
		return Spread{Median: math.NaN(), Min: math.NaN(), Max: math.NaN()}
	}
	slices.Sort(s)
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return Spread{Median: med, Min: s[0], Max: s[len(s)-1], N: len(s)}
}

// Wide reports whether the range is wider than frac of the median, a hint
// that the machine was noisy.
func (s Spread) Wide(frac float64) bool {
	return s.N > 1 && s.Median > 0 && (s.Max-s.Min) > frac*s.Median
}

// Ratio is the median of a over the median of b (NaN if b is 0).
func Ratio(a, b Spread) float64 {
	if b.Median == 0 || math.IsNaN(b.Median) {
		return math.NaN()
	}
	return a.Median / b.Median
}
