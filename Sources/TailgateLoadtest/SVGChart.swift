import Foundation

// MARK: - Downsampling

/// Samples grouped into at most `maxPoints` buckets of whole seconds: throughput averaged per bucket, p50 averaged
/// over the seconds with completed requests, p99 and max the highest of the bucket. A sample covers its second
/// [s, s + 1), so it is placed at s + 0.5 on an axis running to the end of the last second.
struct Bucketed {
    struct Point {
        var x: Double
        var sent: Double, acked: Double, rejected: Double
        var p50: Double, p99: Double, max: Double
        var hasLatency: Bool
    }
    var points: [Point] = []
    var bucketSize = 1
    var xMax: Double = 1

    init(_ sorted: [LoadtestSample], maxPoints: Int) {
        guard let first = sorted.first, let last = sorted.last else { return }
        let lo = min(0, first.second)
        let span = last.second - lo + 1
        bucketSize = max(1, (span + maxPoints - 1) / maxPoints)
        xMax = Double(max(1, last.second + 1))
        var i = 0
        while i < sorted.count {
            let bucket = (sorted[i].second - lo) / bucketSize
            var j = i
            var sum = (x: 0.0, sent: 0.0, acked: 0.0, rejected: 0.0, p50: 0.0)
            var latencyCount = 0
            var p99 = 0.0, mx = 0.0
            while j < sorted.count, (sorted[j].second - lo) / bucketSize == bucket {
                let s = sorted[j]
                sum.x += Double(s.second)
                sum.sent += Double(s.sentSpans)
                sum.acked += Double(s.ackedSpans)
                sum.rejected += Double(s.rejectedSpans)
                if s.hasLatency {
                    latencyCount += 1
                    sum.p50 += finite(s.latencyP50Ms)
                    p99 = Swift.max(p99, finite(s.latencyP99Ms))
                    mx = Swift.max(mx, finite(s.latencyMaxMs))
                }
                j += 1
            }
            let n = Double(j - i)
            points.append(Point(
                x: sum.x / n + 0.5, sent: sum.sent / n, acked: sum.acked / n, rejected: sum.rejected / n,
                p50: latencyCount > 0 ? sum.p50 / Double(latencyCount) : 0, p99: p99, max: mx,
                hasLatency: latencyCount > 0))
            i = j
        }
    }
}

private func finite(_ v: Double) -> Double { v.isFinite ? v : 0 }

// MARK: - SVG charts

/// A line chart over elapsed seconds, rendered as inline SVG with axes, grid, labelled ticks and a legend.
/// Every series is exactly one `<path class="series ...">` (gaps are separate subpaths); coordinates are always finite.
struct Chart {
    struct Series {
        var name: String
        var color: String
        var segments: [[(Double, Double)]]
        var width = 1.6
    }
    struct Reference {
        var value: Double
        var label: String
        var color: String
    }
    enum Scale {
        case linear(Double)         // data maximum
        case log(Double, Double)    // smallest positive value, largest value
    }

    var label: String
    var xMax: Double
    var scale: Scale
    var yTitle: String
    var yFormat: (Double) -> String
    var series: [Series]
    var references: [Reference]

    static let width = 880.0, height = 300.0
    static let left = 62.0, right = 18.0, top = 34.0, bottom = 40.0
    var plotWidth: Double { Self.width - Self.left - Self.right }
    var plotHeight: Double { Self.height - Self.top - Self.bottom }

    func svg() -> String {
        let xTicks = timeTicks(max: xMax)
        let domainX = xTicks.end
        let yAxis = YAxis(scale)
        func px(_ x: Double) -> Double { Self.left + (finite(x) / domainX).clamped(0, 1) * plotWidth }
        func py(_ y: Double) -> Double { Self.top + plotHeight - yAxis.fraction(finite(y)).clamped(0, 1) * plotHeight }

        var s = "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" viewBox=\"0 0 \(n(Self.width)) \(n(Self.height))\" role=\"img\" aria-label=\"\(esc(label))\">\n"
        // Grid and y tick labels.
        s += "<g class=\"grid\">"
        for tick in yAxis.ticks {
            let y = py(tick)
            s += "<line x1=\"\(n(Self.left))\" y1=\"\(n(y))\" x2=\"\(n(Self.left + plotWidth))\" y2=\"\(n(y))\"/>"
        }
        s += "</g>\n<g class=\"axis\">"
        for tick in yAxis.ticks {
            let y = py(tick)
            s += "<line x1=\"\(n(Self.left - 4))\" y1=\"\(n(y))\" x2=\"\(n(Self.left))\" y2=\"\(n(y))\"/>"
            s += "<text x=\"\(n(Self.left - 7))\" y=\"\(n(y + 3.5))\" text-anchor=\"end\">\(esc(yFormat(tick)))</text>"
        }
        for tick in xTicks.values {
            let x = px(tick)
            let y = Self.top + plotHeight
            s += "<line x1=\"\(n(x))\" y1=\"\(n(y))\" x2=\"\(n(x))\" y2=\"\(n(y + 4))\"/>"
            s += "<text x=\"\(n(x))\" y=\"\(n(y + 16))\" text-anchor=\"middle\">\(esc(xTicks.format(tick)))</text>"
        }
        // Axis lines and titles.
        s += "<line x1=\"\(n(Self.left))\" y1=\"\(n(Self.top))\" x2=\"\(n(Self.left))\" y2=\"\(n(Self.top + plotHeight))\"/>"
        s += "<line x1=\"\(n(Self.left))\" y1=\"\(n(Self.top + plotHeight))\" x2=\"\(n(Self.left + plotWidth))\" y2=\"\(n(Self.top + plotHeight))\"/>"
        s += "<text x=\"\(n(Self.left + plotWidth))\" y=\"\(n(Self.height - 4))\" text-anchor=\"end\">elapsed\(esc(xTicks.unit))</text>"
        s += "<text x=\"\(n(Self.left - 7))\" y=\"\(n(Self.top - 10))\" text-anchor=\"end\">\(esc(yTitle))</text>"
        s += "</g>\n"

        // Reference lines (e.g. the target rate).
        for ref in references {
            let y = py(ref.value)
            s += "<line class=\"reference\" x1=\"\(n(Self.left))\" y1=\"\(n(y))\" x2=\"\(n(Self.left + plotWidth))\" y2=\"\(n(y))\" stroke=\"\(ref.color)\" stroke-width=\"1\" stroke-dasharray=\"5 4\"/>\n"
        }

        // Series: one path each; points get markers when there are few of them (a single point has no line).
        let pointCount = series.map { $0.segments.reduce(0) { $0 + $1.count } }.max() ?? 0
        for serie in series {
            var d = ""
            for segment in serie.segments where !segment.isEmpty {
                for (i, p) in segment.enumerated() {
                    d += (i == 0 ? (d.isEmpty ? "M" : " M") : " L") + n(px(p.0)) + " " + n(py(p.1))
                }
            }
            s += "<path class=\"series series-\(esc(serie.name))\" stroke=\"\(serie.color)\" stroke-width=\"\(n(serie.width))\" d=\"\(d)\"><title>\(esc(serie.name))</title></path>\n"
            let isolated = serie.segments.filter { $0.count == 1 }.flatMap { $0 }
            let markers = pointCount <= 40 ? serie.segments.flatMap { $0 } : isolated
            if !markers.isEmpty {
                // Sized by line width, so a wide series' marker still shows around a thin one at the same spot.
                let r = n(Swift.max(2.5, serie.width + 0.8))
                s += "<g class=\"markers\" fill=\"\(serie.color)\">"
                for p in markers { s += "<circle cx=\"\(n(px(p.0)))\" cy=\"\(n(py(p.1)))\" r=\"\(r)\"/>" }
                s += "</g>\n"
            }
        }
        if pointCount == 0 {
            s += "<text class=\"empty\" x=\"\(n(Self.left + plotWidth / 2))\" y=\"\(n(Self.top + plotHeight / 2))\" text-anchor=\"middle\">no data</text>\n"
        }

        // Legend above the plot, left-aligned.
        s += "<g class=\"legend\">"
        var x = Self.left + 4
        for serie in series {
            s += "<line x1=\"\(n(x))\" y1=\"14\" x2=\"\(n(x + 18))\" y2=\"14\" stroke=\"\(serie.color)\" stroke-width=\"3\" stroke-linecap=\"round\"/>"
            s += "<text x=\"\(n(x + 24))\" y=\"18\">\(esc(serie.name))</text>"
            x += 24 + Double(serie.name.count) * 7.5 + 18
        }
        for ref in references {
            s += "<line x1=\"\(n(x))\" y1=\"14\" x2=\"\(n(x + 18))\" y2=\"14\" stroke=\"\(ref.color)\" stroke-width=\"1.5\" stroke-dasharray=\"4 3\"/>"
            s += "<text x=\"\(n(x + 24))\" y=\"18\">\(esc(ref.label))</text>"
            x += 24 + Double(ref.label.count) * 7.5 + 18
        }
        s += "</g>\n</svg>\n"
        return s
    }
}

/// A y axis: where a value falls (0 = bottom, 1 = top) and which ticks to label.
struct YAxis {
    var ticks: [Double]
    var fraction: (Double) -> Double

    init(_ scale: Chart.Scale) {
        switch scale {
        case .linear(let maxValue):
            let (top, ticks) = linearTicks(maxValue)
            self.ticks = ticks
            self.fraction = { $0 / top }
        case .log(let minValue, let maxValue):
            let (lo, hi, ticks) = logTicks(minValue, maxValue)
            let l = log10(lo), range = log10(hi) - log10(lo)
            self.ticks = ticks
            self.fraction = { v in v <= lo ? 0 : (log10(v) - l) / range }
        }
    }
}

/// Nice round ticks from 0 to at least `maxValue` (about five intervals); an empty or zero range becomes 0...1.
func linearTicks(_ maxValue: Double, target: Int = 5) -> (top: Double, ticks: [Double]) {
    let m = maxValue.isFinite && maxValue > 0 ? maxValue : 1
    let step = niceStep(m / Double(target))
    let count = Swift.max(1, Int((m / step - 1e-9).rounded(.up)))
    let ticks = (0...count).map { Double($0) * step }
    return (Double(count) * step, ticks)
}

/// 1, 2, 2.5 or 5 times a power of ten, at least `raw`.
func niceStep(_ raw: Double) -> Double {
    guard raw.isFinite, raw > 0 else { return 1 }
    let magnitude = pow(10, (log10(raw)).rounded(.down))
    let f = raw / magnitude
    let nice: Double = f <= 1 + 1e-9 ? 1 : f <= 2 + 1e-9 ? 2 : f <= 2.5 + 1e-9 ? 2.5 : f <= 5 + 1e-9 ? 5 : 10
    return nice * magnitude
}

/// A log range from a 1-2-5 value at or below `minValue` to one at or above `maxValue`, with 1-2-5 ticks when the
/// range is narrow and powers of ten (plus the ends) when it is wide.
func logTicks(_ minValue: Double, _ maxValue: Double) -> (lo: Double, hi: Double, ticks: [Double]) {
    let lo125 = oneTwoFive(atMost: minValue)
    var hi125 = oneTwoFive(atLeast: maxValue)
    if hi125 <= lo125 { hi125 = lo125 * 10 }
    var all: [Double] = []
    var decade = pow(10, log10(lo125).rounded(.down))
    while decade <= hi125 * 1.000001 {
        for f in [1.0, 2, 5] {
            let v = f * decade
            if v >= lo125 * 0.999999 && v <= hi125 * 1.000001 { all.append(v) }
        }
        decade *= 10
    }
    if all.count <= 9 { return (lo125, hi125, all) }
    // Wide: decades, plus the ends when they are not too close to a decade.
    let decades = all.filter { isPowerOfTen($0) }
    var ticks = decades
    let span = log10(hi125 / lo125)
    for end in [lo125, hi125] where !ticks.contains(where: { abs(log10($0 / end)) < span * 0.06 }) {
        ticks.append(end)
    }
    return (lo125, hi125, ticks.sorted())
}

private func isPowerOfTen(_ v: Double) -> Bool {
    let l = log10(v)
    return abs(l - l.rounded()) < 1e-9
}

private func oneTwoFive(atMost v: Double) -> Double {
    let decade = pow(10, log10(v).rounded(.down))
    for f in [5.0, 2, 1] where f * decade <= v * (1 + 1e-9) { return f * decade }
    return decade
}

private func oneTwoFive(atLeast v: Double) -> Double {
    let decade = pow(10, log10(v).rounded(.down))
    for f in [1.0, 2, 5, 10] where f * decade >= v * (1 - 1e-9) { return f * decade }
    return decade * 10
}

/// Ticks along the elapsed-time axis on whole seconds, minutes or hours, with labels to match.
/// The axis runs from 0 to `end`, the first tick at or after `max`.
func timeTicks(max: Double) -> (values: [Double], end: Double, format: (Double) -> String, unit: String) {
    let m = max.isFinite && max > 0 ? max : 1
    let steps: [Double] = [1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600, 900, 1200, 1800, 3600, 7200, 10800, 21600, 43200, 86400]
    let step = steps.first { m / $0 <= 8 } ?? niceStep(m / 8)
    let count = Swift.max(1, Int((m / step - 1e-9).rounded(.up)))
    let values = (0...count).map { Double($0) * step }
    let end = Double(count) * step
    if end <= 120 {
        return (values, end, { String(Int($0.rounded())) }, " (s)")
    }
    if end <= 3600 {
        return (values, end, { v in let t = Int(v.rounded()); return "\(t / 60):" + twoDigits(t % 60) }, " (m:ss)")
    }
    // Longer than an hour: the step is at least ten minutes.
    return (values, end, { v in let t = Int(v.rounded()); return "\(t / 3600):" + twoDigits((t % 3600) / 60) }, " (h:mm)")
}

private func twoDigits(_ v: Int) -> String { v < 10 ? "0\(v)" : "\(v)" }

/// A coordinate: one decimal, always finite.
private func n(_ v: Double) -> String {
    guard v.isFinite else { return "0" }
    let r = (v * 10).rounded() / 10
    if r == r.rounded() { return String(Int(r)) }
    return String(format: "%.1f", r)
}
