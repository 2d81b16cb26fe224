# testfleet's RSpec preset: run a batch of example ids the way the suite runs.
#
# Run as `ruby -e "<this file>" IDS_FILE REPORT [rspec args...]`: RSpec loads
# the suite's spec files as its plain run does (every file its pattern finds,
# so shared examples and helpers defined in other spec files are there), and
# only the examples whose id is in IDS_FILE (one per line) run, through a
# metadata filter. Given as arguments, example ids would load only their own
# files. REPORT gets RSpec's JSON report.
$0 = "rspec" # RSpec runs its default path only for a command of that name.
require "rspec/core"
require "set"

ids_file, report = ARGV.shift(2)
abort "usage: IDS_FILE REPORT [rspec args...]" unless report
wanted = File.readlines(ids_file, chomp: true).reject(&:empty?).to_set

RSpec.configure do |config|
  config.define_derived_metadata do |meta|
    id = "#{meta[:rerun_file_path]}[#{meta[:scoped_id]}]"
    meta[:testfleet_batch] = true if wanted.include?(id)
  end
  config.filter_run_including testfleet_batch: true
end
exit RSpec::Core::Runner.run(["--format", "json", "--out", report, *ARGV])
