#include "cli.h"

#include <algorithm>
#include <cstdio>
#include <exception>
#include <iostream>

#include "tessera/common/log.h"
#include "tessera/common/version.h"

namespace tessera::cli {
namespace {

// Edit distance where swapping two neighbouring letters counts as one edit (typos like "dmeo").
size_t EditDistance(const std::string& a, const std::string& b) {
  std::vector<std::vector<size_t>> d(a.size() + 1, std::vector<size_t>(b.size() + 1));
  for (size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t sub = d[i - 1][j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, sub});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
  }
  return d[a.size()][b.size()];
}

// The first argument that is not an option (or an option's value): what the user meant as the
// command name.
std::string FirstWord(CLI::App& app, int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.empty() || arg[0] != '-') return arg;
    // Skip the value of a global option given as "--opt value".
    if (arg.find('=') == std::string::npos) {
      const CLI::Option* opt = nullptr;
      try {
        opt = app.get_option_no_throw(arg);
      } catch (...) {
        opt = nullptr;
      }
      if (opt != nullptr && opt->get_type_size() > 0) ++i;
    }
  }
  return "";
}

}  // namespace

std::string Suggest(const std::string& word, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_d = word.size() / 2 + 2;
  for (const auto& c : candidates) {
    size_t d = EditDistance(word, c);
    if (d < best_d || (c.rfind(word, 0) == 0 && !word.empty())) {
      best_d = std::min(d, best_d);
      best = c;
    }
  }
  return best;
}

int Run(int argc, char** argv) {
  Context ctx;
  CLI::App app{"Tessera: a page-based key-value database with an erasure-coded cluster.",
               "tessera"};
  app.set_version_flag("--version", std::string("tessera ") + TESSERA_VERSION);
  app.add_option("--log-level", ctx.log_level,
                 "Log level: trace, debug, info, warn, error, critical, off "
                 "(default: $TESSERA_LOG, else info)");
  app.require_subcommand(1);
  app.fallthrough();
  app.footer("Run 'tessera COMMAND --help' for the options of a command.");

  RegisterInfoCommands(app, ctx);
  RegisterEcCommands(app, ctx);
  RegisterEngineCommands(app, ctx);
  RegisterClusterCommands(app, ctx);
  RegisterDemoCommand(app, ctx);

  std::vector<std::string> names;
  for (const CLI::App* sub : app.get_subcommands([](CLI::App*) { return true; })) {
    names.push_back(sub->get_name());
  }

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::string word = FirstWord(app, argc, argv);
    bool known = std::find(names.begin(), names.end(), word) != names.end();
    if (!word.empty() && !known) {
      std::cerr << "tessera: unknown command '" << word << "'.";
      std::string s = Suggest(word, names);
      if (!s.empty()) std::cerr << " Did you mean '" << s << "'?";
      std::cerr << "\nRun 'tessera --help' for the list of commands.\n";
    } else if (word.empty() && argc <= 1) {
      std::cerr << "tessera: no command given.\n" << app.help();
    } else {
      // The command the error is about: the deepest one parsed (`ec encode`, not `ec`).
      std::string path;
      CLI::App* cur = &app;
      if (known) {
        for (;;) {
          auto subs = cur->get_subcommands();
          if (subs.empty()) break;
          cur = subs.front();
          path += cur->get_name() + " ";
        }
        if (path.empty()) path = word + " ";
      }
      const std::string where =
          "tessera" + (path.empty() ? "" : " " + path.substr(0, path.size() - 1));
      // A command of subcommands (`ec`) given a word that names none of them (`ec decod`).
      std::vector<std::string> nested;
      for (const CLI::App* sub : cur->get_subcommands([](CLI::App*) { return true; })) {
        nested.push_back(sub->get_name());
      }
      std::string unknown;
      if (cur != &app && !nested.empty()) {
        for (int i = 1; i < argc; ++i) {
          if (argv[i] != cur->get_name()) continue;
          for (int j = i + 1; j < argc && unknown.empty(); ++j) {
            if (argv[j][0] != '-') unknown = argv[j];
          }
          break;
        }
      }
      if (!unknown.empty() && std::find(nested.begin(), nested.end(), unknown) == nested.end()) {
        std::cerr << where << ": unknown command '" << unknown << "'.";
        std::string s = Suggest(unknown, nested);
        if (!s.empty()) std::cerr << " Did you mean '" << s << "'?";
        std::cerr << "\n";
      } else {
        std::cerr << where << ": " << e.what() << "\n";
      }
      std::cerr << "Run 'tessera " << path << "--help' for usage.\n";
    }
    return kExitUsage;
  }

  if (Status s = InitLogging(ctx.log_level); !s.ok()) {
    std::cerr << "tessera: " << s.message() << "\n";
    return kExitUsage;
  }
  if (!ctx.action) {
    std::cerr << "tessera: no command given. Run 'tessera --help'.\n";
    return kExitUsage;
  }
  try {
    return ctx.action();
  } catch (const std::exception& e) {
    std::cerr << "tessera: internal error: " << e.what() << "\n";
    return kExitFailure;
  }
}

}  // namespace tessera::cli
