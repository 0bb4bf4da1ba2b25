set terminal pngcairo size 900,600 noenhanced font ",10"
set output "perf/results/2026-12-07-final/ratios.png"
set title "Speed relative to rsync -a over OpenSSH (higher is faster; log scale)"
set datafile missing "NaN"
set datafile separator "\t"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set logscale y
set yrange [0.01:*]
set grid ytics
set ylabel "rsync time / tool time"
set xtics rotate by -30 nomirror
set key outside right top vertical
set arrow from graph 0, first 1 to graph 1, first 1 nohead dt 2 lw 1.5 lc rgb "black"
plot for [i=2:3] "perf/results/2026-12-07-final/ratios.dat" using i:xtic(1) title columnheader(i)
