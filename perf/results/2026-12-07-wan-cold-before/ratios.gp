set terminal pngcairo size 900,300 noenhanced
set output "/tmp/wan-cold-old/ratios.png"
unset border
unset tics
set xrange [0:1]
set yrange [0:1]
set label "no ratio to plot: rsync -a has no successful run in these results" at 0.5,0.5 center
plot 2 notitle
