# gnuplot -e "dir='docs/experiment'; outfile='docs/experiment.png'; tuned='1e-12'" \
#         scripts/plot_experiment.gp
# Three panels from the .dat files scripts/experiment.sh writes: perplexity
# against context length (protocol windows, then end-aligned windows) and
# mean pass-key accuracy against prompt length, both in multiples of the
# training context (2,048 bytes).
if (!exists("dir")) dir = 'docs/experiment'
if (!exists("outfile")) outfile = 'docs/experiment.png'
if (!exists("tuned")) tuned = '1e-12'

set terminal pngcairo size 1650,580 font ",11"
set output outfile
set multiplot layout 1,3 title "byte-mamba-2k (trained at 2,048 bytes) on two books it never saw, CPU"

set logscale x 2
set xrange [0.8:40]
set xtics ("1x" 1, "2x" 2, "4x" 4, "8x" 8, "16x" 16, "32x" 32)
set grid
set key outside bottom center horizontal maxcols 2 Left reverse width -4 font ",10"
set bmargin 7

files = "vanilla decimamba longmamba longmamba_tuned"
array label[4] = ["vanilla", "DeciMamba", "LongMamba θ=1e-3 (default)", "LongMamba θ=".tuned]
array pts[4] = [7, 5, 9, 11]

set title "Perplexity per byte, LONGMAMBA.md §6 windows"
set xlabel "context length / training length"
set ylabel "perplexity (last 1,000 bytes of each window)"
plot for [i=1:4] dir.'/ppl_'.word(files, i).'.dat' using 1:2 with linespoints lw 2 \
     pt pts[i] title label[i]

set title "Perplexity per byte, end-aligned windows (same bytes scored)"
plot for [i=1:4] dir.'/ppl_aligned_'.word(files, i).'.dat' using 1:2 with linespoints lw 2 \
     pt pts[i] title label[i]

set title "Pass-key retrieval (mean over 5 needle depths)"
set xrange [0.8:20]
set xtics ("1x" 1, "2x" 2, "4x" 4, "8x" 8, "16x" 16)
set xlabel "prompt length / training length"
set ylabel "accuracy"
set yrange [-0.05:1.05]

plot for [i=1:4] dir.'/passkey_'.word(files, i).'.dat' using 1:2 with linespoints lw 2 \
     pt pts[i] title label[i]

unset multiplot
